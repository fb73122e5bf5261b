"""Manifests: one utterance per JSONL line, validated at load.

Schema (see data_manifests/README.md): required ``id`` and ``label``; optional
``split``, ``fold``, ``speaker``, ``audio``/``video`` segments
(``{"path", "start", "end"}``), ``text``, ``frames`` and ``targets``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .errors import ConfigError, ManifestError

SPLITS = ("train", "valid", "test")
_KNOWN = {"id", "label", "split", "fold", "speaker", "audio", "text", "video", "frames", "targets"}


@dataclass(frozen=True)
class Segment:
    """A media file and an optional time window in seconds (``end=None``: to the end)."""

    path: str
    start: float = 0.0
    end: float | None = None

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start


@dataclass(frozen=True)
class Utterance:
    id: str
    label: Any
    split: str | None = None
    fold: str | None = None
    speaker: str | None = None
    audio: Segment | None = None
    text: str | None = None
    video: Segment | None = None
    frames: str | None = None
    targets: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The manifest line for this utterance (without defaults)."""
        out: dict[str, Any] = {"id": self.id}
        if self.label is not None:
            out["label"] = self.label
        for key in ("split", "fold", "speaker", "text", "frames"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        for key in ("audio", "video"):
            seg = getattr(self, key)
            if seg is not None:
                out[key] = {k: v for k, v in asdict(seg).items() if v is not None}
        if self.targets:
            out["targets"] = self.targets
        out.update(self.extra)
        return out


@dataclass
class Manifest:
    """A validated manifest: utterances in file order plus where media paths resolve."""

    utterances: list[Utterance]
    data_root: Path
    source: str = "<memory>"

    def __len__(self) -> int:
        return len(self.utterances)

    def __iter__(self):
        return iter(self.utterances)

    def by_id(self) -> dict[str, Utterance]:
        return {u.id: u for u in self.utterances}

    def resolve(self, relpath: str) -> Path:
        """A media path from the manifest, resolved against the data root."""
        p = Path(relpath).expanduser()
        return p if p.is_absolute() else self.data_root / p

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the canonical content (ids, labels, media, splits), independent of formatting."""
        h = hashlib.sha256()
        for u in self.utterances:
            h.update(json.dumps(u.to_json(), sort_keys=True, separators=(",", ":")).encode())
            h.update(b"\n")
        return h.hexdigest()[:16]

    def shard(self, spec: "ShardSpec") -> list[Utterance]:
        """Utterances of shard ``spec``: contiguous blocks whose union is the manifest, each id once."""
        n = len(self.utterances)
        lo = spec.index * n // spec.count
        hi = (spec.index + 1) * n // spec.count
        return self.utterances[lo:hi]


@dataclass(frozen=True)
class ShardSpec:
    """Part ``index`` of ``count`` (0-based), written ``i/n`` on the command line."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> "ShardSpec":
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
        if not m:
            raise ConfigError(f"--shard {text!r}: expected i/n, e.g. 0/4 for the first of four shards")
        i, n = int(m.group(1)), int(m.group(2))
        if n < 1 or not 0 <= i < n:
            raise ConfigError(f"--shard {text!r}: need 0 <= i < n (shards are numbered from 0)")
        return cls(i, n)

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}-of-{self.count:05d}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def _segment(value: Any, key: str, where: str) -> Segment:
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict) or not isinstance(value.get("path"), str) or not value["path"]:
        raise ManifestError(f"{where}: field {key!r} must be {{\"path\": ..., \"start\": s, \"end\": s}}, got {value!r}")
    start, end = value.get("start", 0.0), value.get("end")
    for name, x in (("start", start), ("end", end)):
        if x is not None and (not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x)):
            raise ManifestError(f"{where}: {key}.{name} must be a number of seconds, got {x!r}")
    start = float(start or 0.0)
    if start < 0:
        raise ManifestError(f"{where}: {key}.start is negative ({start}); use seconds from the file's start")
    if end is not None and float(end) <= start:
        raise ManifestError(f"{where}: {key}.end ({end}) must be greater than start ({start})")
    return Segment(value["path"], start, None if end is None else float(end))


def parse_line(record: Any, where: str) -> Utterance:
    """Validate one decoded JSON record; ``where`` names the file and line for errors."""
    if not isinstance(record, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if record.get("id") is None or record["id"] == "":
        raise ManifestError(f"{where}: missing required field 'id'")
    uid = record["id"]
    if not isinstance(uid, (str, int)) or isinstance(uid, bool):
        raise ManifestError(f"{where}: 'id' must be a string, got {uid!r}")
    label = record.get("label")   # optional: prediction-only manifests have none
    if label is not None and (not isinstance(label, (str, int, float)) or isinstance(label, bool) or label == ""):
        raise ManifestError(f"{where}: 'label' must be a class name or a number, got {label!r}")
    split = record.get("split")
    if split is not None and split not in SPLITS:
        raise ManifestError(f"{where}: 'split' is {split!r}; use one of {', '.join(SPLITS)}")
    text = record.get("text")
    if text is not None and not isinstance(text, str):
        raise ManifestError(f"{where}: 'text' must be a string, got {type(text).__name__}")
    targets = record.get("targets") or {}
    if not isinstance(targets, dict):
        raise ManifestError(f"{where}: 'targets' must be an object of extra labels, got {targets!r}")
    return Utterance(
        id=str(uid),
        label=label,
        split=split,
        fold=None if record.get("fold") is None else str(record["fold"]),
        speaker=None if record.get("speaker") is None else str(record["speaker"]),
        audio=_segment(record["audio"], "audio", where) if record.get("audio") is not None else None,
        text=text,
        video=_segment(record["video"], "video", where) if record.get("video") is not None else None,
        frames=record.get("frames"),
        targets=targets,
        extra={k: v for k, v in record.items() if k not in _KNOWN},
    )


def load_manifest(path: str | Path, data_root: str | Path | None = None) -> Manifest:
    """Read and validate a JSONL manifest.

    Media paths resolve against ``data_root`` (default: the manifest's folder).
    Raises ManifestError naming the line for malformed JSON, missing fields,
    bad segments and duplicate ids.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist; run `imo prepare` or pass --manifest")
    utts: list[Utterance] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            utt = parse_line(record, where)
            if utt.id in seen:
                raise ManifestError(f"{where}: duplicate id {utt.id!r} (first on line {seen[utt.id]}); ids must be unique")
            seen[utt.id] = lineno
            utts.append(utt)
    if not utts:
        raise ManifestError(f"manifest {path} has no utterances")
    root = Path(data_root).expanduser() if data_root is not None else path.parent
    return Manifest(utts, root.resolve(), str(path))


def write_manifest(utterances: Iterable[Utterance | dict], path: str | Path) -> Path:
    """Write utterances (objects or plain records) as JSONL."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for u in utterances:
            f.write(json.dumps(u.to_json() if isinstance(u, Utterance) else u, ensure_ascii=False) + "\n")
    return path
