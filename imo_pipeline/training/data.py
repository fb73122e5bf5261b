"""Stores aligned by id with the manifest: preprocessing, in-memory or lazy tables, length-bucketed batches.

Values stay float16 in memory (as stored) and become float32 only per batch.
``Preprocess`` is the single place where stored arrays are turned into head
inputs (layer selection, temporal downsampling, dtype); training, ``imo
evaluate`` and ``Run.predict`` all go through it. Training batches from
in-memory tables are gathered as tensors in one indexing step per modality
(``Corpus.gather``); lazy tables go through ``collate`` item by item. Both give
the same values.

A training epoch's batch order (``epoch_batches``) is shared, as far as lengths
go, by every run of the same epoch: batches are sorted by length into
``BANDS`` bands, the bands come in an order drawn from the epoch number alone
and a band's batches in order of length, while which utterances make up each
batch is the run's own (drawn from its seed). Runs trained side by side
(``training.stacked``) then take batches of about the same length at each step,
so little padding is shared, and a run's batches are the same stacked or alone.
"""

from __future__ import annotations

import queue
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import psutil
import torch
from tqdm import tqdm

from ..errors import StoreError
from ..manifest import Manifest, Utterance
from ..paths import is_url
from ..store import StoreMeta, open_store
from ..store.reader import EmbeddingStore
from .speedups import SPEEDUPS

AUTO_RATE = 12.5  # frames/s that "auto" downsampling aims at (50 fps wav2vec2 -> 4x)
BANDS = 16        # length bands of a training epoch (see the module doc)


@dataclass
class Preprocess:
    """How one modality's stored ``[T, L, D]`` array becomes head input ``[T', L', D]`` in the store's dtype."""

    layers: list[int]       # positions among the stored layers
    downsample: int = 1     # mean over non-overlapping windows of this many frames
    dtype: str = "float16"  # the store's value dtype (float32 stores keep values beyond float16's range)
    max_frames: int | None = None  # keep only the first this many stored frames (before downsampling)

    def apply(self, arr: np.ndarray) -> np.ndarray:
        """Keep the first ``max_frames`` frames, select layers, downsample in float32, return the store's dtype."""
        x = np.asarray(arr)[: self.max_frames, self.layers].astype(np.float32)   # (T, L', D)
        k = self.downsample
        if k > 1 and len(x) > 1:
            T = len(x)
            n = -(-T // k)
            pad = n * k - T
            if pad:
                x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), np.float32)])
            counts = np.full(n, k, np.float32)
            counts[-1] = k - pad
            x = x.reshape(n, k, *x.shape[1:]).sum(1) / counts[:, None, None]  # (T', L', D)
        with np.errstate(over="ignore"):     # out-of-range values become inf, refused by their consumer
            return x.astype(self.dtype, copy=False)

    def out_length(self, T: int) -> int:
        T = min(T, self.max_frames) if self.max_frames else T
        return -(-T // self.downsample) if T > 1 else T

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["max_frames"] is None:
            del d["max_frames"]            # runs without a cap keep the config they always had
        return d


def make_preprocess(meta: StoreMeta, head_layers: str, downsample: int | str = "auto",
                    max_frames: int | None = None) -> Preprocess:
    """The preprocessing for a store: the head's layer choice (``last``/``all``), a downsampling factor
    (``auto``: audio to about 12.5 frames/s, other modalities untouched) and a cap on the stored frames kept."""
    layers = list(range(meta.n_layers)) if head_layers == "all" else [meta.n_layers - 1]
    if downsample == "auto":
        rate = meta.frame_rate
        k = max(1, int(round(rate / AUTO_RATE))) if meta.modality == "audio" and rate else 1
    else:
        k = max(1, int(downsample))
    return Preprocess(layers, k, meta.dtype, max_frames)


class Table:
    """One modality's preprocessed utterances in corpus order: in memory (store dtype) or read lazily."""

    def __init__(self, store: EmbeddingStore, rows: list[int], prep: Preprocess, in_memory: bool,
                 progress: bool = True):
        self.store, self.rows, self.prep, self.in_memory = store, rows, prep, in_memory
        raw = store.lengths()[rows]
        self.lengths = np.array([prep.out_length(int(t)) for t in raw], dtype=np.int64)
        self.values: np.ndarray | None = None
        self._tensor: torch.Tensor | None = None
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        if in_memory:
            self._load(progress)

    def _load(self, progress: bool) -> None:
        L, D = len(self.prep.layers), self.store.dim
        self.values = np.empty((int(self.offsets[-1]), L, D), self.prep.dtype)
        where = {r: k for k, r in enumerate(self.rows)}
        bar = tqdm(total=len(self.rows), desc=f"load {self.store.modality}", unit="utt", disable=not progress,
                   file=sys.stderr)
        for row, (_, arr) in enumerate(self.store):
            k = where.get(row)
            if k is not None:
                self.values[self.offsets[k]:self.offsets[k + 1]] = self.prep.apply(arr)
                bar.update(1)
        bar.close()

    def __getitem__(self, k: int) -> np.ndarray:
        """Utterance ``k`` of the corpus, ``[T', L', D]`` in the store's dtype."""
        if self.values is not None:
            return self.values[self.offsets[k]:self.offsets[k + 1]]
        return self.prep.apply(self.store.get(self.rows[k]))

    def gather(self, groups: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """In-memory utterances ``groups`` (one array of corpus rows per run) as ``(x (K, B, T, L, D) float32,
        mask (K, B, T) bool)``, zero-padded; see ``Corpus.gather``."""
        K, B = len(groups), max(len(g) for g in groups)
        rows = np.zeros((K, B), np.int64)
        real = np.zeros((K, B), bool)
        for k, g in enumerate(groups):
            rows[k, :len(g)], real[k, :len(g)] = g, True
        lengths = np.where(real, self.lengths[rows], 0)                  # (K, B)
        T = max(1, int(lengths.max()))
        t = np.arange(T)
        mask = t < lengths[..., None]                                    # (K, B, T)
        frame = np.where(mask, self.offsets[rows][..., None] + t, 0)      # (K, B, T) row of the flat table
        if self._tensor is None:
            self._tensor = torch.from_numpy(self.values)                 # (frames, L, D) shared, store dtype
        x = self._tensor[torch.from_numpy(frame.reshape(-1))].to(torch.float32)  # (K*B*T, L, D)
        x = x.view(K, B, T, *self.values.shape[1:])
        mask_t = torch.from_numpy(mask)
        x.mul_(mask_t[..., None, None])                                  # padding frames are zero
        return x, mask_t


@dataclass
class Corpus:
    """Manifest utterances present in every store, with one Table per modality (same order)."""

    utterances: list[Utterance]
    tables: dict[str, Table]
    excluded: dict[str, str]          # id -> reason (failed at extraction)
    metas: dict[str, StoreMeta]
    paths: dict[str, str]
    manifest: Manifest | None = None  # the whole manifest, excluded utterances included

    @property
    def stores(self) -> dict[str, EmbeddingStore]:
        return {m: t.store for m, t in self.tables.items()}

    def __len__(self) -> int:
        return len(self.utterances)

    def item(self, k: int) -> dict[str, np.ndarray]:
        return {m: t[k] for m, t in self.tables.items()}

    def gather(self, groups: list[np.ndarray]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Batches of corpus rows, one per run, stacked on a leading run dimension and padded to a common size:
        ``{m: (x (K, B, T, L, D) float32, mask (K, B, T) bool)}`` with ``B`` the largest group and ``T`` the
        longest item of modality ``m`` (at least 1). Padding (frames and rows) is zero and masked. In-memory
        tables are gathered as tensors (float16 -> float32 once per batch); lazy ones go through ``collate``."""
        if SPEEDUPS.fast_batches and all(t.values is not None for t in self.tables.values()):
            return {m: t.gather(groups) for m, t in self.tables.items()}
        return stack_batches([collate([self.item(int(i)) for i in g]) if len(g) else None for g in groups])

    def lengths(self) -> np.ndarray:
        """Total frames of every utterance over modalities ``[n]`` (for bucketing)."""
        return sum(t.lengths for t in self.tables.values())


def open_corpus(manifest: Manifest, stores: dict[str, str | Path | EmbeddingStore], head_layers: str = "last",
                downsample: dict[str, int | str] | None = None, in_memory: str = "auto",
                progress: bool = True, log=print, preprocess: dict[str, Preprocess] | None = None,
                only: set[str] | None = None, max_frames: dict[str, int] | None = None) -> Corpus:
    """Open and check the stores, align them by id with the manifest and load them (see module doc).

    ``stores``: modality -> path, or a store opened (and checked) by the caller.
    ``in_memory``: ``auto`` loads when the estimate fits in half the available RAM, ``yes``/``no`` force it.
    Utterances that failed at extraction are excluded and reported; any other missing id is refused, and so
    is a manifest whose every utterance failed. ``preprocess`` (from a saved run) replaces the choice made
    from ``head_layers``/``downsample``; ``only`` keeps just those ids (e.g. one split for evaluation).
    """
    opened: dict[str, EmbeddingStore] = {}
    for m, path in stores.items():
        if isinstance(path, EmbeddingStore):
            opened[m] = path.check(modality=m, manifest=manifest)
            continue
        if not is_url(path) and not Path(path).exists():
            raise StoreError(f"no {m} store at {path}: run `imo extract --modality {m}` or pass --store {m[0]}=PATH")
        opened[m] = open_store(path).check(modality=m, manifest=manifest)
    excluded: dict[str, str] = {}
    for m, st in opened.items():
        failed = st.failed
        for u in manifest:
            if u.id not in st:
                if u.id not in failed:
                    raise StoreError(f"utterance {u.id!r} is missing from {m} store {st.path} and not recorded as "
                                     f"failed; re-run `imo extract --modality {m}` to complete the store")
                excluded.setdefault(u.id, f"{m}: {failed[u.id]}")
    wanted = [u for u in manifest if only is None or u.id in only]
    utts = [u for u in wanted if u.id not in excluded]
    if wanted and not utts:
        raise StoreError(all_failed(wanted, opened))
    if excluded:
        log(f"excluded {len(excluded)} utterance(s) whose extraction failed (e.g. {next(iter(excluded))!r}: "
            f"{next(iter(excluded.values()))}); the list is in the run folder's excluded.json")
    preps = preprocess or {m: make_preprocess(st.meta, head_layers, (downsample or {}).get(m, "auto"),
                                              (max_frames or {}).get(m)) for m, st in opened.items()}
    rows = {m: [st.index_of(u.id) for u in utts] for m, st in opened.items()}
    estimate = 0
    for m, st in opened.items():
        raw = st.lengths()[rows[m]]
        estimate += sum(preps[m].out_length(int(t)) for t in raw) * len(preps[m].layers) * st.dim * np.dtype(preps[m].dtype).itemsize
    avail = psutil.virtual_memory().available
    load = in_memory == "yes" or (in_memory == "auto" and estimate <= avail // 2)
    kept = {m: f"{m} x{p.downsample} layers {p.layers}" + (f" first {p.max_frames} frames" if p.max_frames else "")
            for m, p in preps.items()}
    log(f"data: {len(utts)} utterances, {', '.join(kept.values())}; "
        f"in memory {estimate / 2**20:.0f} MB (available {avail / 2**30:.1f} GB) -> "
        f"{'loading into memory' if load else 'reading lazily from the stores'}")
    tables = {m: Table(st, rows[m], preps[m], load, progress) for m, st in opened.items()}
    return Corpus(utts, tables, excluded, {m: st.meta for m, st in opened.items()},
                  {m: st.path for m, st in opened.items()}, manifest)


def errors_files(store: EmbeddingStore) -> str:
    """Where extraction listed a store's failures (one errors file per part)."""
    from ..extract import errors_path
    from ..manifest import ShardSpec

    n = store.meta.n_parts
    return errors_path(store.path, ShardSpec(0, 1)) if n == 1 else errors_path(store.path, ShardSpec(0, n)).replace(
        ShardSpec(0, n).name, "part-*")


def all_failed(utts: list[Utterance], stores: dict[str, EmbeddingStore], what: str = "utterances") -> str:
    """The message for ``utts`` that all failed extraction: the store where every one failed, or the count per store."""
    for m, st in stores.items():
        failed = st.failed
        if all(u.id in failed for u in utts):
            return (f"all {len(utts)} {what} failed extraction in store {st.path} (e.g. {utts[0].id!r}: "
                    f"{failed[utts[0].id]}); see its errors file {errors_files(st)}, fix the media and re-run "
                    f"`imo extract --modality {m}`")
    counts = ", ".join(f"{st.path}: {sum(u.id in st.failed for u in utts)}" for st in stores.values())
    return (f"all {len(utts)} {what} failed extraction in at least one store (failed per store: {counts}); see the "
            f"stores' errors files, fix the media and re-run `imo extract`")


def collate(items: list[dict[str, np.ndarray]]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Pad per modality: ``{m: (x (B, T, L, D) float32, mask (B, T) bool, True = frame)}``.

    An item that lacks a modality (no key, or an array of zero frames) gets the absent form of
    ``heads.base``: zeros and an all-False mask row; ``T >= 1``. A modality that no item has is left out
    (``Head.complete_batch`` adds it as absent).
    """
    out = {}
    names = list(dict.fromkeys(m for it in items for m in it))
    for m in names:
        arrs = [it.get(m) for it in items]
        shape = next(a.shape[1:] for a in arrs if a is not None)
        L, D = shape
        T = max(1, max(len(a) for a in arrs if a is not None))
        x = np.zeros((len(arrs), T, L, D), np.float32)
        mask = np.zeros((len(arrs), T), bool)
        for i, a in enumerate(arrs):
            if a is None:
                continue
            x[i, : len(a)] = a
            mask[i, : len(a)] = True
        out[m] = (torch.from_numpy(x), torch.from_numpy(mask))
    return out


def stack_batches(batches: list[dict[str, tuple[torch.Tensor, torch.Tensor]] | None]
                  ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Collated batches (one per run; None: no rows) zero-padded to a common ``(B, T)`` and stacked:
    ``{m: (x (K, B, T, L, D), mask (K, B, T))}``."""
    out = {}
    some = [b for b in batches if b is not None]
    for m in some[0]:
        B = max(b[m][0].shape[0] for b in some)
        T = max(b[m][0].shape[1] for b in some)
        x = torch.zeros(len(batches), B, T, *some[0][m][0].shape[2:])
        mask = torch.zeros(len(batches), B, T, dtype=torch.bool)
        for k, b in enumerate(batches):
            if b is None:
                continue
            xb, mb = b[m]
            x[k, :xb.shape[0], :xb.shape[1]] = xb
            mask[k, :mb.shape[0], :mb.shape[1]] = mb
        out[m] = (x, mask)
    return out


def epoch_batches(indices: np.ndarray, lengths: np.ndarray, batch_size: int, seed: int, epoch: int,
                  pool: int = 50) -> list[list[np.ndarray]]:
    """One training epoch of a run as length bands (see the module doc): ``bucket_batches`` with the run's
    own shuffle (seeded by ``seed`` and ``epoch``), then the batches sorted by their longest item, cut into
    ``BANDS`` bands of consecutive length ranks, the bands in an order drawn from ``epoch`` alone."""
    rng = np.random.default_rng(seed * 100_003 + epoch)
    idx = np.asarray(indices)[rng.permutation(len(indices))]
    batches = bucket_batches(idx, lengths, batch_size, None, pool)
    longest = np.array([lengths[b].max() for b in batches])
    ranked = [batches[i] for i in np.argsort(longest, kind="stable")]
    bands: list[list[np.ndarray]] = [[] for _ in range(BANDS)]
    for r, b in enumerate(ranked):
        bands[r * BANDS // len(ranked)].append(b)
    order = np.random.default_rng([epoch, 0x696D6F]).permutation(BANDS)
    return [bands[j] for j in order]


def bucket_batches(indices: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None,
                   pool: int = 50) -> list[np.ndarray]:
    """Batches of similar length: shuffle (if ``rng``), sort pools of ``pool`` batches by length, cut, shuffle batches."""
    idx = np.asarray(indices)
    if rng is not None:
        idx = idx[rng.permutation(len(idx))]
    batches = []
    step = pool * batch_size
    for lo in range(0, len(idx), step):
        chunk = idx[lo:lo + step]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def prefetch(it: Iterable, depth: int = 4) -> Iterator:
    """Run ``it`` in a background thread, ``depth`` items ahead (batch assembly overlaps compute)."""
    q: queue.Queue = queue.Queue(depth)
    done = object()
    stop = threading.Event()

    def work():
        try:
            for x in it:
                if stop.is_set():
                    return
                q.put(x)
            q.put(done)
        except BaseException as e:  # surface errors in the consumer
            q.put(e)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while True:
            x = q.get()
            if x is done:
                return
            if isinstance(x, BaseException):
                raise x
            yield x
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(0.01)


def batches(corpus: Corpus, indices: np.ndarray, batch_size: int, seed: int | None = None,
            targets: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, dict, torch.Tensor | None]]:
    """(corpus indices, collated inputs, targets) per batch, assembled in a background thread.
    ``seed`` shuffles (training); ``None`` keeps a deterministic length-sorted order."""
    rng = np.random.default_rng(seed) if seed is not None else None
    order = bucket_batches(indices, corpus.lengths(), batch_size, rng)

    def gen():
        for b in order:
            y = None if targets is None else torch.from_numpy(np.asarray(targets[b]))
            yield b, collate([corpus.item(int(k)) for k in b]), y

    return prefetch(gen())
