"""Fixtures for the contract tests: one small builder per registered plug-in.

HOW TO COVER A NEW FAMILY
-------------------------
The contract tests (tests/test_contracts_extractors.py, tests/test_contracts_preparers.py)
run over EVERY name in the registries ``extractors.EXTRACTORS`` and
``imo_pipeline.prepare.PREPARERS``. A registered name without an entry below
makes ``test_every_registered_*_has_a_fixture`` FAIL (and each contract test of
that name), so a new family is covered the moment it is registered:

* an extractor: add ``"<registered name>": builder`` to ``EXTRACTOR_FIXTURES``.
  ``builder(folder)`` writes whatever it needs under ``folder`` (a tiny
  random-init model saved like a real checkpoint, media files) and returns an
  ``ExtractorFixture``: the ``--encoder`` text, a manifest of at least three
  utterances of different lengths, the family options to build with (``layers``
  too; default ``all``), and the tolerance of the batching check. A builder may
  import its family's own test helpers inside the function.
* a preparer: add ``"<registered name>": builder`` to ``PREPARER_FIXTURES``.
  ``builder(folder)`` generates a release under ``folder`` (see the
  ``*_release`` helpers in release_utils.py) and returns a ``PreparerFixture``.

Builders run once per test module (models are cached per module), so keep them small.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import soundfile as sf

from audio_utils import save_tiny_speech_model, tone, write_manifest_lines
from imo_pipeline.manifest import Manifest, load_manifest
from media_utils import CORPUS, moving_face_frames, save_tiny_text_model, save_tiny_vit, write_frames_folder
from release_utils import (cremad_release, iemocap_release, meld_release, mosei_release, mosi_release,
                           ravdess_release)
from speech_utils import emobox_release, lhotse_release, media_release


@dataclass
class ExtractorFixture:
    encoder: str                      # as for `imo extract --encoder`: a name, family:source or a folder
    manifest: Manifest                # >= 3 utterances of different lengths with this family's media
    options: dict[str, Any] = field(default_factory=dict)   # family options to build with
    atol: float = 1e-3                # batched vs single embedding (fp32 on CPU)


@dataclass
class PreparerFixture:
    root: Path                        # the generated release (a file for preparers that take files)
    options: dict[str, Any] = field(default_factory=dict)   # prepare(...) options, e.g. labels="4class"
    base: Path | None = None          # folder every media path must stay in (default: root)


# --- extractors ---------------------------------------------------------------------------
def _audio_manifest(folder: Path) -> Manifest:
    media = folder / "audio"
    media.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, seconds in enumerate((0.6, 1.0, 1.7)):
        sf.write(media / f"a{i}.wav", tone(seconds, 16000, 150 + 40 * i, seed=i), 16000)
        lines.append({"id": f"a{i}", "label": "neu", "audio": f"audio/a{i}.wav"})
    return load_manifest(write_manifest_lines(folder / "audio.jsonl", lines))


def _text_manifest(folder: Path) -> Manifest:
    texts = ["love", CORPUS[0], CORPUS[3] + " " + CORPUS[4]]
    return load_manifest(write_manifest_lines(folder / "text.jsonl", [{"id": f"t{i}", "label": "neu", "text": t}
                                                                      for i, t in enumerate(texts)]))


def _frames_manifest(folder: Path) -> Manifest:
    lines = []
    for i, n in enumerate((2, 4, 7)):
        write_frames_folder(folder / f"frames{i}", moving_face_frames(n, size=96))
        lines.append({"id": f"v{i}", "label": "neu", "frames": f"frames{i}"})
    return load_manifest(write_manifest_lines(folder / "video.jsonl", lines))


def hf_audio(folder: Path) -> ExtractorFixture:
    return ExtractorFixture(str(save_tiny_speech_model(folder / "w2v", "wav2vec2", "layer")), _audio_manifest(folder))


def fbank(folder: Path) -> ExtractorFixture:
    return ExtractorFixture("fbank", _audio_manifest(folder), {"num_mel_bins": 40})


def hf_text(folder: Path) -> ExtractorFixture:
    return ExtractorFixture(str(save_tiny_text_model(folder / "roberta", "roberta")), _text_manifest(folder))


def hf_vision(folder: Path) -> ExtractorFixture:
    return ExtractorFixture(str(save_tiny_vit(folder / "vit")), _frames_manifest(folder), {"face": False, "crop_size": 32})


def pixels(folder: Path) -> ExtractorFixture:
    return ExtractorFixture("pixels", _frames_manifest(folder), {"face": False, "size": 8})


def fabnet(folder: Path) -> ExtractorFixture:
    import torch

    from extractors.fabnet import FabNetEncoder

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(FabNetEncoder().eval().state_dict(), folder / "fabnet.pth")
    return ExtractorFixture(f"fabnet:{folder / 'fabnet.pth'}", _frames_manifest(folder), {"face": False})


# Families whose tiny checkpoints are written by their own test helpers (imported when the family is
# registered, so this file loads on a branch without them). Each helper returns the --encoder text
# (and options), as the hook expects.
def fairseq_audio(folder: Path) -> ExtractorFixture:
    from fairseq_utils import w2v2_fixture

    encoder, options = w2v2_fixture(folder / "w2v2")
    return ExtractorFixture(encoder, _audio_manifest(folder), options)


def fairseq_text(folder: Path) -> ExtractorFixture:
    from fairseq_utils import roberta_fixture

    encoder, options = roberta_fixture(folder / "roberta")
    return ExtractorFixture(encoder, _text_manifest(folder), options)


def emotion2vec(folder: Path) -> ExtractorFixture:
    from test_extract_emotion2vec import tiny_emotion2vec

    encoder, options = tiny_emotion2vec(folder / "e2v")
    return ExtractorFixture(encoder, _audio_manifest(folder), options)


def whisper(folder: Path) -> ExtractorFixture:
    from test_extract_whisper import tiny_whisper

    return ExtractorFixture(tiny_whisper(folder / "whisper"), _audio_manifest(folder))


def faster_whisper(folder: Path) -> ExtractorFixture:
    from test_extract_whisper import tiny_faster_whisper

    return ExtractorFixture(tiny_faster_whisper(folder / "ct2"), _audio_manifest(folder))


#: registered extractor name -> builder(folder) -> ExtractorFixture
EXTRACTOR_FIXTURES: dict[str, Callable[[Path], ExtractorFixture]] = {
    "hf-audio": hf_audio,
    "fbank": fbank,
    "hf-text": hf_text,
    "hf-vision": hf_vision,
    "pixels": pixels,
    "fabnet": fabnet,
    "fairseq-audio": fairseq_audio,
    "fairseq-text": fairseq_text,
    "emotion2vec": emotion2vec,
    "whisper": whisper,
    "faster-whisper": faster_whisper,
}


# --- preparers ----------------------------------------------------------------------------
#: registered preparer name -> builder(folder) -> PreparerFixture
PREPARER_FIXTURES: dict[str, Callable[[Path], PreparerFixture]] = {
    "iemocap": lambda folder: PreparerFixture(iemocap_release(folder / "IEMOCAP_full_release")),
    "meld": lambda folder: PreparerFixture(meld_release(folder / "MELD")),
    "mosi": lambda folder: PreparerFixture(mosi_release(folder / "CMU_MOSI")),
    "mosei": lambda folder: PreparerFixture(mosei_release(folder / "CMU_MOSEI")),
    "ravdess": lambda folder: PreparerFixture(ravdess_release(folder / "RAVDESS")),
    "cremad": lambda folder: PreparerFixture(cremad_release(folder / "CREMA-D")),
    "media": lambda folder: PreparerFixture(media_release(folder / "recordings"), {
        "asr": None, "progress": False, "data_root": folder / "recordings"}),
    "emobox": lambda folder: PreparerFixture(emobox_release(folder / "EmoBox"), {"name": "cafe"}),
    "lhotse": lambda folder: PreparerFixture(lhotse_release(folder / "lhotse"), {
        "label_field": "emotion", "data_root": folder / "lhotse"}, base=folder / "lhotse"),
}
