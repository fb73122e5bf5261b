"""What every dataset preparer shares: the registry, the report of problems, and the driver.

A preparer reads a dataset as released and returns manifest utterances. It never
decodes media; it only checks that referenced files exist. Every skipped line,
missing file, unknown label code and mismatched id goes into a ``PrepareReport``
with its reason; ``--strict`` turns any of them into an error.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, ManifestError
from ..manifest import Utterance
from ..registry import Registry

PREPARERS: Registry[type["Preparer"]] = Registry("dataset preparer")

#: Problem kinds a report counts. ``skipped``: a file or line that is not an utterance
#: (hidden files, non-scored transcript turns); ``missing``: a referenced media file that
#: does not exist; ``unknown_label``: a label code outside the release's code book;
#: ``mismatched_id``: an id found in one source (labels, transcripts, folds) but not another.
KINDS = ("skipped", "missing", "unknown_label", "mismatched_id")


def register_preparer(name: str) -> Callable[[type["Preparer"]], type["Preparer"]]:
    """Class decorator: make a preparer available to ``imo prepare NAME``."""
    return PREPARERS.register(name)


@dataclass
class Issue:
    kind: str
    where: str       # file (and line) or utterance id
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "where": self.where, "reason": self.reason}


@dataclass
class PrepareReport:
    """Problems found while preparing, plus counts of the utterances kept.

    ``excluded`` counts utterances left out on purpose by the label set (e.g.
    IEMOCAP ``fru`` under ``4class``); they are not problems.
    """

    dataset: str = ""
    issues: list[Issue] = field(default_factory=list)
    excluded: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    total: int = 0

    def add(self, kind: str, where: str | Path, reason: str) -> None:
        """Record one problem; ``kind`` is one of KINDS."""
        if kind not in KINDS:
            raise ValueError(f"unknown issue kind {kind!r}; use one of {KINDS}")
        self.issues.append(Issue(kind, str(where), reason))

    def exclude(self, label: str) -> None:
        self.excluded[label] += 1

    def note(self, text: str) -> None:
        self.notes.append(text)

    def by_kind(self) -> dict[str, int]:
        c = Counter(i.kind for i in self.issues)
        return {k: c.get(k, 0) for k in KINDS}

    def of(self, kind: str) -> list[Issue]:
        return [i for i in self.issues if i.kind == kind]

    def count(self, utterances: list[Utterance]) -> None:
        """Fill ``counts`` (per label, split, fold and speaker) from the kept utterances."""
        self.total = len(utterances)
        def tally(key: Callable[[Utterance], Any]) -> dict[str, int]:
            c = Counter("-" if key(u) is None else str(key(u)) for u in utterances)
            return dict(sorted(c.items()))
        numeric = utterances and all(isinstance(u.label, (int, float)) for u in utterances)
        self.counts = {
            "label": _bins(utterances) if numeric else tally(lambda u: u.label),
            "split": tally(lambda u: u.split),
            "fold": tally(lambda u: u.fold),
            "speakers": {"n": len({u.speaker for u in utterances if u.speaker is not None})},
        }

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "utterances": self.total, "counts": self.counts,
                "problems": self.by_kind(), "excluded_by_label_set": dict(self.excluded),
                "notes": self.notes, "issues": [i.to_json() for i in self.issues]}

    def summary(self, max_listed: int = 10) -> str:
        """A human-readable report: counts, then every problem kind with its first few items."""
        lines = [f"{self.dataset}: {self.total} utterances"]
        for key in ("label", "split", "fold"):
            if self.counts.get(key):
                lines.append(f"  {key:6s} " + "  ".join(f"{k}={v}" for k, v in self.counts[key].items()))
        if self.counts.get("speakers"):
            lines.append(f"  speakers {self.counts['speakers']['n']}")
        if self.excluded:
            lines.append("  excluded by the label set: " + "  ".join(f"{k}={v}" for k, v in sorted(self.excluded.items())))
        for kind, n in self.by_kind().items():
            if not n:
                continue
            lines.append(f"  {kind}: {n}")
            for i in self.of(kind)[:max_listed]:
                lines.append(f"    {i.where}: {i.reason}")
            if n > max_listed:
                lines.append(f"    ... {n - max_listed} more (all are in the report file)")
        lines.extend(f"  note: {t}" for t in self.notes)
        return "\n".join(lines)


def _bins(utterances: list[Utterance]) -> dict[str, int]:
    """Counts of a regression label rounded to integers (e.g. sentiment -3..3)."""
    c = Counter(str(int(round(float(u.label)))) for u in utterances)
    return dict(sorted(c.items(), key=lambda kv: int(kv[0])))


class Preparer:
    """Base class: subclasses set ``label_sets`` (first = default) and implement ``collect``."""

    label_sets: tuple[str, ...] = ()
    description: str = ""

    def __init__(self, root: Path, labels: str | None = None, **options: Any):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(f"dataset root {self.root} is not a folder; pass the folder the release unpacks into")
        labels = labels or self.label_sets[0]
        if labels not in self.label_sets:
            raise ConfigError(f"--labels {labels!r} is not offered for {self.registered_name}; "  # type: ignore[attr-defined]
                              f"use one of {', '.join(self.label_sets)}")
        self.labels = labels
        self.options = options

    def collect(self, report: PrepareReport) -> list[Utterance]:
        """Read the release under ``self.root``; record every problem in ``report``."""
        raise NotImplementedError

    def rel(self, path: Path) -> str:
        """A media path relative to the dataset root (the manifest's data root)."""
        return path.relative_to(self.root).as_posix()


def is_hidden(path: Path) -> bool:
    """macOS resource forks (``._x``) and other dot files that releases unpacked on a Mac carry."""
    return path.name.startswith(".")


def fold_count(value) -> int:
    """``--folds K`` for actor-independent folds (default 5)."""
    try:
        k = int(value or 5)
    except (TypeError, ValueError):
        raise ConfigError(f"--folds {value!r}: give the number of actor-independent folds, e.g. --folds 5") from None
    return k


def actor_folds(actors: list[str], k: int) -> dict[str, str]:
    """Actor-independent folds: sorted actors dealt round-robin into ``k`` folds named "0".."k-1"."""
    if k < 2:
        raise ConfigError(f"--folds {k}: need at least 2 actor-independent folds")
    return {a: str(i % k) for i, a in enumerate(sorted(set(actors)))}


def split_of_fold(fold: str, k: int) -> str:
    """Split from an actor fold: the last fold is test, the one before it valid, the rest train."""
    i = int(fold)
    return "test" if i == k - 1 else "valid" if i == k - 2 else "train"


def prepare(dataset: str, root: str | Path, out: str | Path | None = None, labels: str | None = None,
            strict: bool = False, **options: Any) -> tuple[list[Utterance], PrepareReport]:
    """Prepare ``dataset`` from its release at ``root``; write the manifest (and a report beside it).

    Returns (utterances, report). With ``strict``, any problem raises ManifestError
    listing them (and nothing is written). The report is ``<out>.report.json``.
    """
    from . import load_all

    load_all()
    cls = PREPARERS.get(dataset)
    if out is not None:
        check_writable(Path(out))
    preparer = cls(Path(root), labels, **options)
    report = PrepareReport(dataset=f"{dataset} ({preparer.labels})")
    utts = preparer.collect(report)
    seen: set[str] = set()
    for u in utts:
        if u.id in seen:
            raise ManifestError(f"{dataset}: the release yields id {u.id!r} twice; this is a bug in the preparer")
        seen.add(u.id)
    report.count(utts)
    if strict and report.issues:
        raise ManifestError(f"{dataset}: --strict and {len(report.issues)} problem(s) found "
                            f"({', '.join(f'{k} {n}' for k, n in report.by_kind().items() if n)}); first: "
                            + "; ".join(f"{i.where}: {i.reason}" for i in report.issues[:3])
                            + ". Fix the release or drop --strict to skip them")
    if not utts:
        found = [f"{i.where}: {i.reason}" for i in report.issues[:3]] + report.notes[:2]
        raise ManifestError(f"{dataset}: no utterances found under {root}; is this the release's top folder?"
                            + (f" ({'; '.join(found)})" if found else ""))
    if out is not None:
        _write_outputs(Path(out), utts, report)
    return utts, report


def check_writable(out: Path) -> None:
    """ConfigError (one line) unless the manifest ``out`` and its report can be written: neither is a folder,
    and the nearest existing folder above them is a writable folder. Checked before the release is read."""
    for p in (out, report_path(out)):
        if p.is_dir():
            raise ConfigError(f"--out {p} is a folder; give the manifest file to write, e.g. {p / 'manifest.jsonl'}")
    parent = out.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"--out {out}: {parent} is a file, not a folder; choose a path in a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: the folder {parent} is not writable; choose a writable path")


def _write_outputs(out: Path, utts: list[Utterance], report: PrepareReport) -> None:
    """The manifest and its report, both written aside and renamed into place only once both are written."""
    import tempfile

    from ..manifest import manifest_text

    pairs = [(out, manifest_text(utts)), (report_path(out), json.dumps(report.to_json(), indent=1, ensure_ascii=False))]
    temps: list[Path] = []
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for path, text in pairs:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temps.append(Path(tmp))
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
        for (path, _), tmp in zip(pairs[::-1], temps[::-1]):  # the report first: a manifest never lacks one
            os.replace(tmp, path)
    except OSError as e:
        raise ConfigError(f"--out {out}: could not be written ({e.strerror or e}); choose a writable path") from None
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def report_path(manifest: Path) -> Path:
    """Where ``prepare`` writes the report for a manifest: ``NAME.report.json`` beside it."""
    return manifest.with_name(manifest.stem + ".report.json")
