"""Manifests: one utterance per JSONL line, validated at load.

Schema (see data_manifests/README.md): required ``id``; optional ``label``
(absent for prediction-only manifests), ``split``, ``fold``, ``speaker``,
``audio``/``video`` segments (``{"path", "start", "end"}``), ``text``,
``frames`` and ``targets``. Every number must be finite and every string
must be encodable as UTF-8 (no lone surrogates such as ``"\udc80"``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

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
    label: str | int | float | None = None   # None: unlabeled (prediction only)
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


def _bad_value(value: Any, path: str = "") -> tuple[str, str] | None:
    """(field path, reason) of the first non-finite number or non-UTF-8 string in a record, else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, f"is {value!r}; numbers must be finite (NaN and Infinity are not data)"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return path, (f"holds {value[e.start:e.end]!r} at position {e.start}, which is not valid Unicode "
                          f"(a lone surrogate); it cannot be stored as UTF-8")
    elif isinstance(value, dict):
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            bad = _bad_value(k, f"{sub} (the key)") or _bad_value(v, sub)
            if bad:
                return bad
    elif isinstance(value, list):
        for i, v in enumerate(value):
            bad = _bad_value(v, f"{path}[{i}]")
            if bad:
                return bad
    return None


def _name(record: dict, key: str, where: str) -> str | None:
    """An optional name field (fold, speaker): text or an integer, kept as text."""
    v = record.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (str, int)) or v == "":
        raise ManifestError(f"{where}: {key!r} must be a non-empty string or an integer, got {v!r}")
    return str(v)


def parse_line(record: Any, where: str) -> Utterance:
    """Validate one decoded JSON record; ``where`` names the file and line for errors."""
    if not isinstance(record, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(record).__name__}")
    bad = _bad_value(record)
    if bad:
        raise ManifestError(f"{where}: field {bad[0]!r} {bad[1]}; fix the line")
    if "id" not in record or record["id"] is None or record["id"] == "":
        raise ManifestError(f"{where}: missing required field 'id'")
    uid = record["id"]
    if not isinstance(uid, (str, int)) or isinstance(uid, bool):
        raise ManifestError(f"{where}: 'id' must be a string, got {uid!r}")
    label = record.get("label")
    if label is not None and (not isinstance(label, (str, int, float)) or isinstance(label, bool) or label == ""):
        raise ManifestError(f"{where}: 'label' must be a class name or a number, got {label!r} "
                            f"(leave the field out for an unlabeled utterance)")
    split = record.get("split")
    if split is not None and split not in SPLITS:
        raise ManifestError(f"{where}: 'split' is {split!r}; use one of {', '.join(SPLITS)}")
    text = record.get("text")
    if text is not None and not isinstance(text, str):
        raise ManifestError(f"{where}: 'text' must be a string, got {type(text).__name__}")
    frames = record.get("frames")
    if frames is not None and (not isinstance(frames, str) or not frames):
        raise ManifestError(f"{where}: 'frames' must be the path of a folder of images, got {frames!r}")
    targets = record.get("targets") or {}
    if not isinstance(targets, dict):
        raise ManifestError(f"{where}: 'targets' must be an object of extra labels, got {targets!r}")
    return Utterance(
        id=str(uid),
        label=label,
        split=split,
        fold=_name(record, "fold", where),
        speaker=_name(record, "speaker", where),
        audio=_segment(record["audio"], "audio", where) if record.get("audio") is not None else None,
        text=text,
        video=_segment(record["video"], "video", where) if record.get("video") is not None else None,
        frames=frames,
        targets=targets,
        extra={k: v for k, v in record.items() if k not in _KNOWN},
    )


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file (a leading BOM is dropped); ManifestError naming the line
    for bytes that are not UTF-8."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                yield lineno, raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise ManifestError(f"{path}:{lineno}: not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1}); "
                                    f"manifests are UTF-8: convert the file, e.g. iconv -f latin1 -t utf-8") from None


def load_manifest(path: str | Path, data_root: str | Path | None = None) -> Manifest:
    """Read and validate a JSONL manifest.

    Media paths resolve against ``data_root`` (default: the manifest's folder).
    Raises ManifestError naming the line for bytes that are not UTF-8, malformed
    or too deeply nested JSON, missing fields, non-finite numbers, strings that
    are not valid Unicode, bad segments and duplicate ids.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist; run `imo prepare` or pass --manifest")
    utts: list[Utterance] = []
    seen: dict[str, int] = {}
    try:
        for lineno, line in _lines(path):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            except RecursionError:
                raise ManifestError(f"{where}: JSON nested too deeply to be a manifest line; "
                                    f"one flat object per line") from None
            utt = parse_line(record, where)
            if utt.id in seen:
                raise ManifestError(f"{where}: duplicate id {utt.id!r} (first on line {seen[utt.id]}); ids must be unique")
            seen[utt.id] = lineno
            utts.append(utt)
    except OSError as e:
        raise ManifestError(f"manifest {path} could not be read ({e.strerror or e})") from None
    if not utts:
        raise ManifestError(f"manifest {path} has no utterances")
    root = Path(data_root).expanduser() if data_root is not None else path.parent
    return Manifest(utts, root.resolve(), str(path))


def manifest_text(utterances: Iterable[Utterance | dict]) -> str:
    """Utterances (objects or plain records) as JSONL text; ManifestError for a NaN or infinite number."""
    lines = []
    for u in utterances:
        record = u.to_json() if isinstance(u, Utterance) else u
        try:
            lines.append(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        except ValueError:
            raise ManifestError(f"utterance {record.get('id')!r} holds a NaN or infinite number, which a manifest "
                                f"cannot carry; fix the value at its source") from None
    return "".join(lines)


def write_manifest(utterances: Iterable[Utterance | dict], path: str | Path) -> Path:
    """Write utterances (objects or plain records) as JSONL, atomically (a temp file renamed into place)."""
    return write_text_atomic(Path(path), manifest_text(utterances))


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temp file beside it and a rename: a reader never sees a
    half-written file, and a failure leaves no temp file behind. Creates missing parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
