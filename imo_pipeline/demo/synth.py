"""A small synthetic trimodal emotion set, generated offline for the demo.

Four classes whose cues are split across modalities, so that each modality
alone is ambiguous and only the fused model can tell all four apart:

=========  ===========================  ======================  ====================
class      audio (arousal)              text (valence)          face
=========  ===========================  ======================  ====================
ang        high pitch, loud, fast       negative sentence       lowered V brows
hap        high pitch, loud, fast       positive sentence       neutral face
neu        low pitch, soft, slow        positive sentence       neutral face
sad        low pitch, soft, slow        negative sentence       raised inner brows
=========  ===========================  ======================  ====================

Audio tells {ang, hap} from {neu, sad}; text tells {hap, neu} from {ang, sad};
the face tells ang and sad apart but not hap from neu.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw

from ..manifest import write_manifest

CLASSES = ("ang", "hap", "neu", "sad")
SAMPLE_RATE = 16000
FACE_SIZE = 96
FRAMES_PER_UTTERANCE = 4

_AROUSAL = {"ang": "high", "hap": "high", "neu": "low", "sad": "low"}
_VALENCE = {"ang": "negative", "hap": "positive", "neu": "positive", "sad": "negative"}
_BROWS = {"ang": "lowered", "hap": "flat", "neu": "flat", "sad": "raised"}

# (mean f0 Hz, loudness, syllables per second) per arousal level
_VOICE = {"high": (230.0, 0.6, 5.5), "low": (125.0, 0.2, 3.0)}

_SUBJECTS = ["this meeting", "the new flat", "my job", "the weekend", "our trip", "the result",
             "your plan", "the dinner", "that song", "the game"]
_WORDS = {
    "positive": ["I really love {s}.", "{S} is wonderful, thank you.", "I am so glad about {s}.",
                 "{S} turned out great.", "What a lovely surprise, {s}.", "I enjoy {s} a lot."],
    "negative": ["I really hate {s}.", "{S} is awful, I can't stand it.", "I am so upset about {s}.",
                 "{S} turned out terrible.", "What a horrible mess, {s}.", "I am sick of {s}."],
}


@dataclass
class DemoSet:
    manifest: Path
    root: Path
    n: int


def speech_like(rng: np.random.Generator, seconds: float, f0: float, loudness: float, rate: float) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal: (samples,) float32 in [-1, 1]."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    contour = f0 * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.3, 0.8) * t + rng.uniform(0, 6.3)))
    phase = 2 * np.pi * np.cumsum(contour) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 9))
    syllables = np.clip(np.sin(np.pi * rate * t + rng.uniform(0, 3.1)), 0, None) ** 2
    x = loudness * syllables * voice / 2.5 + 0.005 * rng.standard_normal(len(t))
    return np.clip(x, -1, 1).astype(np.float32)


def sentence(rng: np.random.Generator, valence: str) -> str:
    template = _WORDS[valence][rng.integers(len(_WORDS[valence]))]
    subject = _SUBJECTS[rng.integers(len(_SUBJECTS))]
    return template.format(s=subject, S=subject[0].upper() + subject[1:])


def face(rng: np.random.Generator, brows: str, jitter: float) -> Image.Image:
    """A rendered grey face whose brows show the expression; position and size vary a little."""
    s = FACE_SIZE
    img = Image.new("L", (s, s), int(rng.integers(20, 60)))
    d = ImageDraw.Draw(img)
    cx, cy = s / 2 + rng.normal(0, jitter), s / 2 + rng.normal(0, jitter)
    r = s * rng.uniform(0.36, 0.42)
    d.ellipse([cx - r * 0.8, cy - r, cx + r * 0.8, cy + r], fill=int(rng.integers(170, 210)))
    eye_y, eye_dx = cy - r * 0.2, r * 0.35
    for side in (-1, 1):
        ex = cx + side * eye_dx
        d.ellipse([ex - 5, eye_y - 3, ex + 5, eye_y + 3], fill=30)
        inner, outer = (ex - side * 7, ex + side * 7)
        lift = {"lowered": (8, -1), "flat": (0, 0), "raised": (-5, 6)}[brows]
        d.line([(inner, eye_y - 12 + lift[0]), (outer, eye_y - 12 + lift[1])], fill=20, width=3)
    d.line([(cx - r * 0.3, cy + r * 0.45), (cx + r * 0.3, cy + r * 0.45)], fill=60, width=3)
    return img


def generate(out: str | Path, per_class: int = 40, seed: int = 0) -> DemoSet:
    """Write wav files, face-frame folders and ``manifest.jsonl`` under ``out``.

    Per class: 60 % train, 20 % valid, 20 % test. Durations 1-2.5 s; five
    speakers whose voices differ in pitch.
    """
    root = Path(out)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    speakers = {f"spk{i}": rng.uniform(0.85, 1.15) for i in range(5)}
    records = []
    for label in CLASSES:
        for i in range(per_class):
            uid = f"{label}_{i:03d}"
            speaker = list(speakers)[i % len(speakers)]
            split = "train" if i < 0.6 * per_class else "valid" if i < 0.8 * per_class else "test"
            f0, loud, rate = _VOICE[_AROUSAL[label]]
            wav = speech_like(rng, rng.uniform(1.0, 2.5), f0 * speakers[speaker] * rng.uniform(0.92, 1.08),
                              loud * rng.uniform(0.8, 1.2), rate * rng.uniform(0.9, 1.1))
            sf.write(root / "audio" / f"{uid}.wav", wav, SAMPLE_RATE)
            frames = root / "frames" / uid
            frames.mkdir(parents=True, exist_ok=True)
            for k in range(FRAMES_PER_UTTERANCE):
                face(rng, _BROWS[label], jitter=2.0).save(frames / f"{k:03d}.png")
            records.append({"id": uid, "label": label, "split": split, "speaker": speaker,
                            "audio": {"path": f"audio/{uid}.wav"}, "text": sentence(rng, _VALENCE[label]),
                            "frames": f"frames/{uid}"})
    manifest = write_manifest(records, root / "manifest.jsonl")
    return DemoSet(manifest=manifest, root=root, n=len(records))
