"""EmoBox (Ma et al., Interspeech 2024): its published metadata and official folds -> a manifest.

EmoBox ships, per dataset, ``data/<name>/<name>.jsonl`` (every utterance), ``label_map.json``
(its label merges, e.g. IEMOCAP ``exc`` -> ``Happy``) and ``fold_<k>/<name>_<part>_fold_<k>.jsonl``
with ``part`` = ``train``, ``test`` and, for some datasets, ``valid`` (MER2023 adds ``test1``..
``test3``; a few datasets also keep older ``<name>_<part>_fold<k>.jsonl`` copies, which are
ignored when the ``_fold_<k>`` files exist). One JSON object per line::

    {"key": "iemocap-Ses01F_impro04_F000", "dataset": "iemocap",
     "wav": "downloads/iemocap/Session1/sentences/wav/Ses01F_impro04/Ses01F_impro04_F000.wav",
     "type": "raw", "sample_rate": 16000, "num_frame": 70312.0, "task": "category",
     "length": 4.3945, "emo": "neu", "channel": 1}

(older files say ``audio``/``label`` for ``wav``/``emo``; ``start_time``/``end_time``, when present,
cut the file). ``wav`` is relative to the EmoBox checkout (``downloads/...``): pass that folder
as ``--data-root`` to check the files, and to ``imo extract``.

Manifest: ``id`` = ``key``; ``label`` = ``emo`` through ``label_map.json`` (``--labels mapped``,
the labels EmoBox's results use; a code that matches a key only when case is ignored, as emodb's
``neutral`` for ``Neutral``, is mapped and counted in a note) or as is (``--labels raw``); ``fold`` = the fold whose test list
holds the utterance (datasets with several folds); ``split`` = its part in fold ``--fold``
(default 1). Datasets without a valid list: an utterance of the fold's training part is
``valid`` when ``sha256(key)`` read as a fraction in [0, 1) is below ``--valid-fraction``
(default 0.2, EmoBox's 80/20 ratio) — about a fifth of each fold's training part, the same
utterances whatever the fold or file order. Audio in a video container (MELD's mp4, MER2023's
avi) is also the utterance's ``video``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..manifest import Segment, Utterance
from ..media.stream import VIDEO_SUFFIXES
from .base import PrepareReport, Preparer, register_preparer

PARTS = ("train", "valid", "test")


def valid_by_hash(key: str, fraction: float) -> bool:
    """The fixed rule that moves a training utterance to valid (see the module doc)."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:13], 16) / 16 ** 13 < fraction


def _fold_file(name: str, dataset: str) -> tuple[str, int, bool] | None:
    """(part, fold, legacy) of a fold file name, or None."""
    m = re.fullmatch(re.escape(dataset) + r"_([A-Za-z0-9]+)_fold(_?)(\d+)\.jsonl", name)
    return None if m is None else (m.group(1), int(m.group(3)), m.group(2) == "")


@register_preparer("emobox")
class EmoBox(Preparer):
    label_sets = ("mapped", "raw")
    takes_files = True          # ROOT may be a metadata .jsonl as well as a folder
    description = "EmoBox metadata (any of its 32 datasets) with its official folds"

    def __init__(self, root: Path, labels: str | None = None, name: str | None = None,
                 data_root: Path | None = None, fold: int = 1, valid_fraction: float = 0.2, **options: Any):
        root, dataset = Path(root), name
        labels = labels or self.label_sets[0]
        if labels not in self.label_sets:
            raise ConfigError(f"--labels {labels!r} is not offered for emobox; use mapped (EmoBox's label_map.json) or raw")
        if not 0 <= valid_fraction < 1:
            raise ConfigError(f"--valid-fraction {valid_fraction}: give a share in [0, 1), e.g. 0.2")
        self.labels, self.options = labels, options
        self.fold, self.valid_fraction = int(fold), float(valid_fraction)
        self.data_root = Path(data_root) if data_root is not None else None
        self.single: Path | None = None
        if root.is_file():
            if root.suffix != ".jsonl":
                raise ConfigError(f"{root}: give EmoBox's data folder, data/<NAME>/ or one of its .jsonl files")
            dataset = dataset or _guess_dataset(root)
            if root.name == f"{dataset}.jsonl":
                self.folder = root.parent
            else:
                self.single = root
                self.folder = root.parent.parent if re.fullmatch(r"fold_?\d+", root.parent.name) else root.parent
        elif root.is_dir():
            if dataset and (root / dataset).is_dir():
                self.folder = root / dataset
            elif (root / f"{dataset or root.name}.jsonl").is_file() or any(root.glob("fold_*")):
                dataset = dataset or root.name
                self.folder = root
            elif dataset is None:
                names = sorted(p.name for p in root.iterdir() if (p / f"{p.name}.jsonl").is_file()
                               or any(p.glob("fold_*")))
                if not names:
                    raise ConfigError(f"{root} holds no EmoBox dataset (no <NAME>/<NAME>.jsonl, no fold_<k>/ lists); "
                                      f"give EmoBox's data folder, data/<NAME>/ or a metadata .jsonl")
                raise ConfigError(f"{root} holds several EmoBox datasets; pick one with --dataset NAME "
                                  f"({', '.join(names[:12])})")
            else:
                raise ConfigError(f"--dataset {dataset!r}: {root / dataset} does not exist; give EmoBox's data folder "
                                  f"(the one holding {dataset}/)")
        else:
            raise ConfigError(f"{root} does not exist; give EmoBox's data folder, data/<NAME>/ or a metadata .jsonl")
        if not dataset:
            raise ConfigError(f"{root}: name the EmoBox dataset with --dataset NAME")
        self.dataset = dataset
        self.root = self.folder

    def _read(self, path: Path, report: PrepareReport) -> list[dict]:
        out = []
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path.name}:{lineno}"
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    report.add("skipped", where, f"not valid JSON ({e.msg})")
                    continue
                if not isinstance(rec, dict):
                    report.add("skipped", where, "not a JSON object")
                    continue
                wav, emo, key = rec.get("wav", rec.get("audio")), rec.get("emo", rec.get("label")), rec.get("key")
                if not isinstance(key, str) or not key or not isinstance(wav, str) or not wav or emo is None:
                    report.add("skipped", where, "needs 'key', 'wav' (or 'audio') and 'emo' (or 'label')")
                    continue
                rec["_wav"], rec["_emo"], rec["_where"] = wav, emo, where
                out.append(rec)
        return out

    def collect(self, report: PrepareReport) -> list[Utterance]:
        label_map = None
        if self.labels == "mapped":
            lm = self.folder / "label_map.json"
            if lm.is_file():
                label_map = json.loads(lm.read_text(encoding="utf-8"))
            else:
                report.note(f"no label_map.json in {self.folder}: labels are EmoBox's codes as they are")
        records: dict[str, dict] = {}
        order: list[str] = []

        def add(rec: dict) -> None:
            if rec["key"] not in records:
                records[rec["key"]] = rec
                order.append(rec["key"])

        parts: dict[int, dict[str, set[str]]] = {}
        if self.single is not None:
            info = _fold_file(self.single.name, self.dataset)
            recs = self._read(self.single, report)
            for r in recs:
                add(r)
            if info and info[0] in PARTS:
                parts[info[1]] = {info[0]: {r["key"] for r in recs}}
                self.fold = info[1]             # one list: its own fold and part
        else:
            everything = self.folder / f"{self.dataset}.jsonl"
            if everything.is_file():
                for r in self._read(everything, report):
                    add(r)
            listed = set(order)
            parts = self._folds(report, add)
            if everything.is_file():
                extra = [k for k in order if k not in listed]
                for k in extra:
                    report.add("mismatched_id", records[k]["_where"], f"{k} is in a fold list but not in "
                                                                     f"{everything.name}; kept")
        test_fold = self._test_folds(parts, report)
        split_of = self._splits(parts, report)
        utts = []
        self.case_folded = 0
        for key in order:
            u = self._utterance(records[key], label_map, split_of.get(key), test_fold.get(key), report)
            if u is not None:
                utts.append(u)
        if self.case_folded:
            report.note(f"{self.case_folded} emotion code(s) matched a label_map.json key only when case is ignored "
                        f"(e.g. 'neutral' for 'Neutral')")
        if len(parts) > 1:
            report.note(f"folds: {', '.join(map(str, sorted(parts)))} (fold = the fold whose test list holds the "
                        f"utterance); split from fold {self.fold}")
        return utts

    def _folds(self, report: PrepareReport, add) -> dict[int, dict[str, set[str]]]:
        files: dict[tuple[int, str], tuple[Path, bool]] = {}
        for d in sorted(self.folder.glob("fold_*")):
            for f in sorted(d.glob("*.jsonl")):
                info = _fold_file(f.name, self.dataset)
                if info is None:
                    continue
                part, k, legacy = info
                have = files.get((k, part))
                if have is None or (have[1] and not legacy):
                    files[(k, part)] = (f, legacy)
        parts: dict[int, dict[str, set[str]]] = {}
        ignored = []
        for (k, part), (f, _) in sorted(files.items()):
            if part not in PARTS:
                ignored.append(f.name)
            recs = self._read(f, report)
            for r in recs:
                add(r)
            parts.setdefault(k, {})[part] = {r["key"] for r in recs}
        if ignored:
            report.note(f"lists other than train/valid/test ({', '.join(ignored)}) set no split; their "
                        f"utterances are in the manifest without one unless fold {self.fold}'s lists name them")
        return parts

    def _test_folds(self, parts: dict[int, dict[str, set[str]]], report: PrepareReport) -> dict[str, str]:
        if len(parts) < 2:
            return {}
        out: dict[str, str] = {}
        for k in sorted(parts):
            for key in sorted(parts[k].get("test", ())):
                if key in out:
                    report.add("mismatched_id", key, f"in the test lists of folds {out[key]} and {k}; fold {out[key]} kept")
                else:
                    out[key] = str(k)
        return out

    def _splits(self, parts: dict[int, dict[str, set[str]]], report: PrepareReport) -> dict[str, str]:
        if not parts:
            report.note("no fold lists found: no splits")
            return {}
        if self.fold not in parts:
            raise ConfigError(f"--fold {self.fold}: EmoBox's {self.dataset} has folds {', '.join(map(str, sorted(parts)))}")
        lists = parts[self.fold]
        out = {}
        for part in ("train", "valid", "test"):
            for key in lists.get(part, ()):
                out.setdefault(key, part)
        if "valid" not in lists and "train" in lists:
            moved = 0
            for key in lists["train"]:
                if out.get(key) == "train" and valid_by_hash(key, self.valid_fraction):
                    out[key] = "valid"
                    moved += 1
            report.note(f"no EmoBox valid list: {moved} of fold {self.fold}'s {len(lists['train'])} training "
                        f"utterances are valid (sha256(key) < {self.valid_fraction})")
        return out

    @staticmethod
    def _folded(label_map: dict) -> dict[str, str]:
        """label_map keys by their case-folded spelling, where that spelling is unique."""
        keys: dict[str, list[str]] = {}
        for k in label_map:
            keys.setdefault(str(k).casefold(), []).append(str(k))
        return {f: ks[0] for f, ks in keys.items() if len(ks) == 1}

    def _utterance(self, rec: dict, label_map: dict | None, split: str | None, fold: str | None,
                   report: PrepareReport) -> Utterance | None:
        key, wav, emo, where = rec["key"], rec["_wav"], rec["_emo"], rec["_where"]
        label = emo
        if label_map is not None:
            if str(emo) not in label_map and self._folded(label_map).get(str(emo).casefold()) is not None:
                self.case_folded += 1
                emo = self._folded(label_map)[str(emo).casefold()]
            if str(emo) not in label_map:
                report.add("unknown_label", where, f"{key}: emotion {emo!r} is not in label_map.json "
                                                   f"({', '.join(map(str, label_map))})")
                return None
            label = label_map[str(emo)]
            emo = rec["_emo"]
        start, end = rec.get("start_time"), rec.get("end_time")
        try:
            start = float(start) if start is not None else 0.0
            end = float(end) if end is not None else None
        except (TypeError, ValueError):
            report.add("skipped", where, f"{key}: start_time/end_time are not numbers ({start!r}, {end!r})")
            return None
        if self.data_root is not None and not (self.data_root / wav).is_file():
            report.add("missing", where, f"{key}: {self.data_root / wav} does not exist; utterance left out")
            return None
        seg = Segment(wav, start, end)
        extra: dict[str, Any] = {"emobox_dataset": rec.get("dataset", self.dataset)}
        if label_map is not None and label != emo:
            extra["emobox_emo"] = emo
        return Utterance(id=key, label=label, split=split, fold=fold, audio=seg,
                         video=seg if Path(wav).suffix.lower() in VIDEO_SUFFIXES else None, extra=extra)


def _guess_dataset(path: Path) -> str:
    m = re.fullmatch(r"(.+?)_[A-Za-z0-9]+_fold_?\d+\.jsonl", path.name)
    return m.group(1) if m else path.stem
