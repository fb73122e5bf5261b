"""Inference on new media with a trained run.

The run folder records, for every modality, the store it was trained on and
that store's extractor config (encoder, layers, preprocessing) and weight
fingerprint. ``Predictor`` rebuilds exactly those extractors, embeds the new
media as extraction would (float16 round trip included), and feeds the head
through the same code path as ``imo evaluate``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from tqdm import tqdm

from .errors import ConfigError, ImoError, MediaError
from .manifest import Manifest, Segment, Utterance
from .media.audio import conform_audio
from .training.runs import Run, load_run


@dataclass
class Prediction:
    """One utterance's output: class probabilities (or a value, for regression)."""

    id: str
    scores: np.ndarray | None = None   # (C,) probabilities, or () value for regression
    labels: list[str] | None = None
    error: str | None = None
    missing: tuple[str, ...] = ()       # run modalities the input lacked (runs trained with modality dropout)

    @property
    def label(self) -> str | float | None:
        if self.scores is None:
            return None
        if self.labels is None:
            return float(self.scores)
        return self.labels[int(np.argmax(self.scores))]

    def as_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"id": self.id, "prediction": "" if self.label is None else self.label}
        if self.labels is not None:
            scores = self.scores if self.scores is not None else [None] * len(self.labels)
            row.update({f"p_{name}": ("" if p is None else f"{p:.6f}") for name, p in zip(self.labels, scores)})
        row["error"] = self.error or ""
        return row


@dataclass
class Predictor:
    """A trained run plus the extractors its stores were made with."""

    run: Run
    device: str = "cpu"
    extractors: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> "Predictor":
        """Load the run and rebuild each modality's encoder; refuse if one is unavailable or differs."""
        run = load_run(run_dir)
        pred = cls(run, device)
        for modality in run.modalities:
            pred.extractors[modality] = _rebuild_extractor(modality, run.store_meta[modality], device)
        return pred

    @property
    def modalities(self) -> list[str]:
        return list(self.run.modalities)

    def missing(self, utt: Utterance, decoded: dict[str, Any] | None = None) -> list[str]:
        """The run's modalities that ``utt`` has no media for; MediaError (one line naming the option to add)
        unless the run was trained with modality dropout and at least one is there."""
        decoded = decoded or {}
        missing = [m for m in self.modalities if m not in decoded and not _has_media(utt, m)]
        if not missing:
            return []
        if len(missing) == len(self.modalities):
            raise MediaError(f"utterance {utt.id!r} has none of the run's modalities; pass "
                             f"{' or '.join('--' + m for m in missing)} (or add it to the manifest)")
        if not self.run.modality_dropout:
            raise MediaError(f"utterance {utt.id!r}: the run needs {', '.join(missing)} but the input has none; "
                             f"pass {' '.join('--' + m for m in missing)} (or add it to the manifest); "
                             f"run modalities: {', '.join(self.modalities)} (only a run trained with "
                             f"--modality-dropout predicts without one)")
        return missing

    def embed(self, utt: Utterance, manifest: Manifest, decoded: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Per-modality ``[T, L, D]`` float16 features of one utterance, as a store would hold them
        (``decoded``: media already decoded, e.g. a waveform array, used instead of the utterance's file).
        A modality it lacks is left out when the run was trained with modality dropout (see ``missing``)."""
        decoded = decoded or {}
        missing = self.missing(utt, decoded)
        return {m: self._embed_media(m, decoded[m] if m in decoded else ext.load(utt, manifest))
                for m, ext in self.extractors.items() if m not in missing}

    def _embed_media(self, modality: str, media: Any) -> np.ndarray:
        return self.extractors[modality].embed([media])[0].astype(np.float16)

    def predict_features(self, items: list[dict[str, np.ndarray]]) -> np.ndarray:
        """Head outputs for per-utterance features: ``(N, C)`` probabilities or ``(N,)`` values."""
        return np.asarray(self.run.predict(items))

    def predict_manifest(self, manifest: Manifest, progress: bool = True) -> list[Prediction]:
        """One prediction per utterance; a bad utterance gets its error, the others go on."""
        out = []
        for utt in tqdm(manifest, desc="predict", unit="utt", disable=not progress):
            try:
                scores = self.predict_features([self.embed(utt, manifest)])[0]
                out.append(Prediction(utt.id, scores, self.run.labels, missing=tuple(self.missing(utt))))
            except ImoError as e:
                out.append(Prediction(utt.id, labels=self.run.labels, error=str(e)))
        return out

    def predict(self, audio: str | Path | np.ndarray | None = None, text: str | None = None,
                video: str | Path | None = None, frames: str | Path | None = None,
                sample_rate: int | None = None) -> Prediction:
        """Predict one input given as file paths, a waveform array (with ``sample_rate``) and/or a string."""
        wave = None
        if isinstance(audio, np.ndarray):
            if sample_rate is None:
                raise ConfigError("an audio array needs its sample_rate")
            wave, audio = audio, None
        utt = Utterance(id="input", label=None,
                        audio=Segment(str(Path(audio).resolve())) if audio is not None else None,
                        text=text,
                        video=Segment(str(Path(video).resolve())) if video is not None else None,
                        frames=str(Path(frames).resolve()) if frames is not None else None)
        decoded = {}
        if wave is not None and "audio" in self.extractors:  # conformed as decoding a file would be
            decoded["audio"] = conform_audio(wave, sample_rate, self.extractors["audio"].sample_rate)
        feats = self.embed(utt, Manifest([utt], Path(tempfile.gettempdir()), "<command line>"), decoded)
        return Prediction(utt.id, self.predict_features([feats])[0], self.run.labels,
                          missing=tuple(self.missing(utt, decoded)))


def _has_media(utt: Utterance, modality: str) -> bool:
    if modality == "audio":
        return utt.audio is not None
    if modality == "text":
        return utt.text is not None
    return utt.video is not None or utt.frames is not None


def _rebuild_extractor(modality: str, meta, device: str):
    """The extractor a store was made with; ConfigError naming it if it cannot be loaded or differs."""
    from extractors import build_extractor

    from .extract import store_meta
    from .store.layout import ENCODER_IDENTITY

    encoder = dict(meta.encoder)
    name = f"{encoder.get('type')}" + (f":{encoder['source']}" if encoder.get("source") else "")
    try:
        ext = build_extractor(encoder, modality, device=device)
    except ImoError as e:
        raise ConfigError(f"this run needs the {modality} encoder {name}, which is not available here ({e}); "
                          f"make it available at that path or hub id (or in the local Hugging Face cache)") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"this run needs the {modality} encoder {name}, which could not be loaded ({e})") from None
    diff = store_meta(ext).compatible(meta, ENCODER_IDENTITY)
    if diff:
        key, have, want = diff
        why = ("has different weights or options than the one the run's store was made with"
               if key == "encoder_fingerprint" else "does not make what the run's store holds")
        raise ConfigError(f"the {modality} encoder {name} found here {why} ({key} {have!r} != {want!r}); "
                          f"use the original checkpoint")
    return ext


def format_prediction(p: Prediction) -> str:
    """What `imo predict` prints: the label and the classes by probability, or the value."""
    if p.labels is None:
        return f"value: {p.label:.4f}"
    ranked = sorted(zip(p.labels, p.scores), key=lambda x: -x[1])
    return "\n".join([f"label: {p.label}"] + [f"  {name:>12s}  {score:.4f}" for name, score in ranked])


def write_predictions(predictions: Iterable[Prediction], path: str | Path) -> Path:
    """Write predictions as CSV (id, prediction, one probability column per class, error), atomically."""
    import csv
    import io
    import os

    rows = [p.as_row() for p in predictions]
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--out {path} is a folder; name the CSV file to write, e.g. {path / 'predictions.csv'}")
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["id", "prediction", "error"])
    writer.writeheader()
    writer.writerows(rows)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(buf.getvalue(), encoding="utf-8", newline="")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"could not write {path} ({e.strerror or e}); pass another --out") from None
    return path
