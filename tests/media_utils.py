"""Helpers for text and video tests: tiny random-init text/vision models with their tokenizer or
image processor, faces the Haar cascade detects, videos and frame folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

CORPUS = ["the meeting was wonderful and i really love it", "i am so upset about the awful weather today",
          "what a lovely surprise thank you so much", "this is terrible and i can not stand it",
          "we walked home slowly after the game", "a quick brown fox jumps over the lazy dog"]
TINY_TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def _word_vocab(specials: list[str]) -> list[str]:
    words = sorted({w for s in CORPUS for w in s.split()})
    letters = sorted({ch for s in CORPUS for ch in s if ch != " "})
    return specials + words + letters + [f"##{ch}" for ch in letters]


def save_tiny_text_model(folder: Path, kind: str = "roberta", seed: int = 0, max_positions: int = 64) -> Path:
    """A random-init BERT or RoBERTa encoder + a tokenizer trained here, saved like a hub checkpoint."""
    import transformers as tf

    folder.mkdir(parents=True, exist_ok=True)
    if kind == "bert":
        vocab = _word_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
        tok = tf.BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
        cfg = tf.BertConfig(vocab_size=len(vocab), max_position_embeddings=max_positions, **TINY_TEXT)
        model_cls = tf.BertModel
    else:
        from tokenizers import ByteLevelBPETokenizer

        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(CORPUS * 4, vocab_size=300, min_frequency=1,
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        vocab_file, merges_file = bpe.save_model(str(folder))
        tok = tf.RobertaTokenizer(vocab=vocab_file, merges=merges_file)
        cfg = tf.RobertaConfig(vocab_size=bpe.get_vocab_size(), max_position_embeddings=max_positions + 2,
                               pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                               eos_token_id=tok.eos_token_id, **TINY_TEXT)
        model_cls = tf.RobertaModel
    tok.model_max_length = max_positions
    torch.manual_seed(seed)
    model_cls(cfg, add_pooling_layer=False).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def save_tiny_vit(folder: Path, seed: int = 0) -> Path:
    """A random-init ViT (32x32 input, 8x8 patches) + its image processor."""
    import transformers as tf

    torch.manual_seed(seed)
    cfg = tf.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64)
    tf.ViTModel(cfg, add_pooling_layer=False).save_pretrained(folder)
    tf.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def draw_face(size: int = 160, cx: int = 80, cy: int = 80, r: int = 50, bg: int = 40) -> np.ndarray:
    """An RGB ``(size, size, 3)`` uint8 picture of a face that OpenCV's frontal Haar cascade detects:
    skin ellipse, dark brows and eyes, nose and mouth, softened."""
    import cv2

    img = np.full((size, size, 3), bg, np.uint8)
    cv2.ellipse(img, (cx, cy), (int(r * 0.8), r), 0, 0, 360, (190, 160, 140), -1)
    for s in (-1, 1):
        ex, ey = cx + s * int(r * 0.35), cy - int(r * 0.2)
        cv2.ellipse(img, (ex, ey - int(r * 0.22)), (int(r * 0.2), int(r * 0.06)), 0, 0, 360, (50, 40, 30), -1)
        cv2.ellipse(img, (ex, ey), (int(r * 0.16), int(r * 0.09)), 0, 0, 360, (40, 30, 30), -1)
    cv2.ellipse(img, (cx, cy + int(r * 0.25)), (int(r * 0.1), int(r * 0.06)), 0, 0, 360, (120, 90, 80), -1)
    cv2.ellipse(img, (cx, cy + int(r * 0.55)), (int(r * 0.3), int(r * 0.08)), 0, 0, 360, (90, 40, 40), -1)
    return cv2.GaussianBlur(img, (5, 5), 0)


def blank_frame(size: int = 160, value: int = 90, seed: int = 0) -> np.ndarray:
    """A faceless frame: a flat grey with mild noise."""
    rng = np.random.default_rng(seed)
    return np.clip(value + rng.normal(0, 4, (size, size, 3)), 0, 255).astype(np.uint8)


def moving_face_frames(n: int, size: int = 160, faceless: set[int] = frozenset()) -> list[np.ndarray]:
    """``n`` frames of a face drifting left to right; frames in ``faceless`` show no face."""
    out = []
    for i in range(n):
        if i in faceless:
            out.append(blank_frame(size, seed=i))
        else:
            out.append(draw_face(size, cx=60 + int(40 * i / max(1, n - 1)), cy=80, r=45))
    return out


def write_frames_folder(folder: Path, frames: list[np.ndarray], ext: str = "png") -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.{ext}"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return folder


def write_av(path: Path, audio: np.ndarray, rate: int, frames: list[np.ndarray] | None = None, fps: int = 25) -> Path:
    """An mp4 with PyAV: mpeg4 video (when ``frames`` are given) + AAC mono audio."""
    from fractions import Fraction

    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        vs = None
        if frames is not None:
            vs = c.add_stream("mpeg4", rate=fps)
            vs.width, vs.height, vs.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
            vs.options = {"qscale": "3"}
        aus = c.add_stream("aac", rate=rate)
        aus.layout = "mono"
        for i in range(0, len(audio), 1024):
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[None, i:i + 1024]), format="fltp", layout="mono")
            f.sample_rate, f.pts, f.time_base = rate, i, Fraction(1, rate)
            for p in aus.encode(f):
                c.mux(p)
        for img in frames or []:
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in aus.encode(None):
            c.mux(p)
        if vs is not None:
            for p in vs.encode(None):
                c.mux(p)
    return path
