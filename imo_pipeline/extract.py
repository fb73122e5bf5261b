"""The extraction driver: manifest shard -> frozen encoder -> one store part.

Batches are planned once over the whole part (sorted by length, sized by a
budget in the extractor's unit), so a resumed job re-runs exactly the batches
an uninterrupted one would and produces identical values. Media for the next
batches is decoded in a background thread while the model runs.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from tqdm import tqdm

from .errors import MediaError, StoreError
from .manifest import Manifest, ShardSpec, Utterance
from .paths import is_url
from .store import NonFiniteError, PartWriter, StoreMeta
from .store.layout import format_size

PREFETCH = 2  # batches decoded ahead of the model streams


@dataclass
class ExtractResult:
    store: str
    shard: ShardSpec
    done: int = 0                 # extracted by this run
    skipped: int = 0              # already in the store
    failed: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> {path, reason}
    amount: float = 0.0           # seconds / tokens / frames processed by this run
    seconds: float = 0.0          # wall time
    errors_file: str | None = None
    notes: dict[str, str] = field(default_factory=dict)  # id -> what the encoder changed or left out of a stored utterance
    notes_file: str | None = None

    def summary(self, unit: str) -> str:
        rate = self.amount / self.seconds if self.seconds else 0.0
        line = (f"part {self.shard}: done {self.done}, already present {self.skipped}, failed {len(self.failed)} "
                f"({self.amount:.1f} {unit} in {self.seconds:.1f} s, {rate:.1f} {unit}/s)")
        if self.failed:
            line += f"; failures listed in {self.errors_file}"
        if self.notes:
            uid, note = next(iter(self.notes.items()))
            line += (f"; notes for {len(self.notes)} utterance(s) stored with a caveat, in {self.notes_file} "
                     f"(e.g. {uid}: {note})")
        return line


def errors_path(store: str | Path, shard: ShardSpec) -> str:
    """``cache/audio.errors.jsonl`` (or ``cache/audio.part-00001-of-00004.errors.jsonl``) beside the store
    (for a store URL, a URL beside it)."""
    parent, _, name = str(store).rstrip("/").rpartition("/")
    stem = name[: -len(".zarr")] if name.endswith(".zarr") else name
    suffix = "" if shard.count == 1 else f".{shard.name}"
    return f"{parent}/{stem}{suffix}.errors.jsonl" if parent else f"{stem}{suffix}.errors.jsonl"


def plan_batches(sizes: dict[str, float], budget: float, batching: str) -> list[list[str]]:
    """Group ids sorted by (size, id) so that ``len(batch) * max size <= budget`` (at least one per batch)."""
    order = sorted(sizes, key=lambda k: (sizes[k], k))
    if batching == "single" or budget <= 0:
        return [[k] for k in order]
    batches: list[list[str]] = []
    cur: list[str] = []
    for k in order:
        if cur and (len(cur) + 1) * sizes[k] > budget:
            batches.append(cur)
            cur = []
        cur.append(k)
    if cur:
        batches.append(cur)
    return batches


def store_meta(extractor, manifest: Manifest | None = None, shard: ShardSpec = ShardSpec(),
               dtype: str = "float16") -> StoreMeta:
    """What a store written by ``extractor`` from ``manifest`` says about itself (no manifest: encoder only);
    ``dtype`` is the stored value type (float16, or float32 for values beyond float16's range)."""
    return StoreMeta(
        modality=extractor.modality, encoder=extractor.config_dict(), encoder_fingerprint=extractor.fingerprint(),
        layers=list(extractor.layers), dim=int(extractor.dim), frame_rate=extractor.frame_rate,
        manifest_fingerprint=manifest.fingerprint if manifest is not None else "", n_parts=shard.count, dtype=dtype,
    )


def _decode(extractor, manifest: Manifest, utts: list[Utterance]) -> list[tuple[Utterance, Any, str | None]]:
    out = []
    for u in utts:
        try:
            out.append((u, extractor.load(u, manifest), None))
        except MediaError as e:
            out.append((u, None, str(e)))
        except Exception as e:  # a decoder bug must not sink the batch job
            out.append((u, None, f"{type(e).__name__}: {e}"))
    return out


def _embed_safely(extractor, items: list[tuple[Utterance, Any]]) -> Iterator[tuple[Utterance, Any, str | None]]:
    """Embed a batch; if it fails, retry item by item so only the bad utterance fails."""
    try:
        for (u, _), emb in zip(items, extractor.embed([m for _, m in items])):
            yield u, emb, None
        return
    except Exception as batch_error:
        if len(items) == 1:
            yield items[0][0], None, f"encoder failed: {type(batch_error).__name__}: {batch_error}"
            return
    for u, m in items:
        yield from _embed_safely(extractor, [(u, m)])


def default_streams(extractor) -> tuple[int, int]:
    """(concurrent model streams, intra-op threads each). On CPU, one single-threaded stream per
    core beats one multi-threaded stream (~1.35x for wav2vec2-base on 2 cores); GPUs get one stream."""
    if extractor.device.type != "cpu":
        return 1, torch.get_num_threads()
    cores = torch.get_num_threads()
    streams = min(cores, 8)
    return streams, max(1, cores // streams)


def release_free_memory() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Embedding blocks and activations of varying size are freed from several
    threads; glibc keeps such pages in its arenas, so without this the resident
    memory of a long job creeps up with the number of utterances (measured in
    benchmarks/extract_scale.py). Called after each batch.
    """
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes
            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM = None


@contextmanager
def _intra_op_threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def extract(manifest: Manifest, extractor, out: str | Path, shard: ShardSpec = ShardSpec(),
            budget: float | None = None, progress: bool = True, chunk_mb: float = 4, shard_mb: float = 128,
            streams: int | None = None, on_batch: Callable[[int, float], None] | None = None,
            dtype: str = "float16", log: Callable[[str], None] | None = None) -> ExtractResult:
    """Extract ``shard`` of ``manifest`` with ``extractor`` into the store ``out``; resumes a partial part.

    Per-utterance problems (missing/corrupt/empty media, encoder errors) are
    collected, written to the errors file beside the store and returned; they
    never stop the job. ``budget`` is the batch size in the extractor's unit;
    ``streams`` batches run through the model at once (default: see
    ``default_streams``). Results are written in plan order whatever finishes first.
    ``dtype`` is the store's value type (float16, or float32 for values beyond +-65504); an
    embedding that is not finite in it fails that utterance like any bad input. Before any utterance is
    encoded, the size of what is left to write is estimated (``log``ged when several layers are kept)
    and the job is refused if the store's disk cannot hold it.
    """
    t0 = time.perf_counter()
    utts = manifest.shard(shard)
    by_id = {u.id: u for u in utts}
    _check_sizes(budget, shard_mb, chunk_mb, streams)
    result = ExtractResult(str(out), shard, errors_file=errors_path(out, shard))
    result.notes_file = result.errors_file[: -len(".errors.jsonl")] + ".notes.jsonl"
    if budget is None:
        budget = extractor.default_budget * (4 if extractor.device.type != "cpu" else 1)
    n_streams, threads = default_streams(extractor)
    if streams is not None:
        n_streams, threads = streams, max(1, torch.get_num_threads() // streams)

    with PartWriter(out, shard, store_meta(extractor, manifest, shard, dtype), [u.id for u in utts],
                    chunk_mb=chunk_mb, shard_mb=shard_mb) as writer:
        result.skipped = len(writer.done_ids)
        result.notes = dict(writer.group.attrs.get("notes") or {})
        sizes: dict[str, float] = {}
        for u in utts:
            try:
                sizes[u.id] = extractor.measure(u, manifest)
            except Exception as e:
                if u.id not in writer.done_ids:
                    result.failed[u.id] = {"path": extractor.media_path(u) or "", "reason": str(e)}
        batches = [b for b in plan_batches(sizes, budget, extractor.batching)
                   if any(k not in writer.done_ids for k in b)]
        todo = sum(k not in writer.done_ids for b in batches for k in b)
        check_disk_space(extractor, [sizes[k] for b in batches for k in b if k not in writer.done_ids], out,
                         dtype, log)
        bar = tqdm(total=todo, unit="utt", desc=f"{extractor.modality} {shard}", disable=not progress,
                   dynamic_ncols=True)
        ahead = n_streams + PREFETCH
        decoding: dict[int, Future] = {}
        running: dict[int, Future] = {}

        def run_batch(i: int):
            decoded = decoding.pop(i).result()
            ok = [(u, m) for u, m, err in decoded if err is None]
            return [(u, err) for u, _, err in decoded if err is not None], list(_embed_safely(extractor, ok)) if ok else []

        with _intra_op_threads(threads), ThreadPoolExecutor(1, thread_name_prefix="imo-decode") as decoder, \
                ThreadPoolExecutor(n_streams, thread_name_prefix="imo-model") as runners:
            def submit(j: int) -> None:
                decoding[j] = decoder.submit(_decode, extractor, manifest, [by_id[k] for k in batches[j]])
                running[j] = runners.submit(run_batch, j)

            for j in range(min(ahead, len(batches))):
                submit(j)
            for i in range(len(batches)):
                decode_errors, embedded = running.pop(i).result()
                if i + ahead < len(batches):
                    submit(i + ahead)
                for u, err in decode_errors:
                    result.failed[u.id] = {"path": extractor.media_path(u) or "", "reason": err}
                n_new, amount = 0, 0.0
                for u, emb, err in embedded:
                    if u.id in writer.done_ids:
                        continue  # batch-mate of a missing utterance, already stored
                    if err is not None:
                        result.failed[u.id] = {"path": extractor.media_path(u) or "", "reason": err}
                        continue
                    try:  # (store helper) a non-finite embedding fails this utterance only, like bad media
                        writer.add(u.id, emb)
                    except NonFiniteError as e:
                        result.failed[u.id] = {"path": extractor.media_path(u) or "", "reason": str(e)}
                        continue
                    n_new += 1
                    amount += sizes[u.id]
                writer.commit()
                release_free_memory()
                if _take_notes(extractor, batches[i], result):
                    writer.group.attrs["notes"] = result.notes
                result.done += n_new
                result.amount += amount
                bar.update(n_new + sum(1 for k in batches[i] if k in result.failed))
                bar.set_postfix_str(f"{result.amount / (time.perf_counter() - t0):.1f} {extractor.unit}/s",
                                    refresh=False)
                if on_batch:
                    on_batch(n_new, amount)
        bar.close()
        writer.finish({k: v["reason"] for k, v in result.failed.items()})
    result.seconds = time.perf_counter() - t0
    _write_errors(result)
    _write_notes(result)
    return result


def estimate_bytes(extractor, sizes: list[float], dtype: str = "float16") -> int:
    """Bytes a store will hold for utterances of ``sizes`` (the extractor's unit): values of every frame
    (seconds x frame rate for audio; tokens or frames otherwise) for each kept layer, plus pooled vectors."""
    import numpy as np

    per_unit = extractor.frame_rate if extractor.unit == "s" and extractor.frame_rate else 1.0
    frames = sum(int(np.ceil(s * per_unit)) + 1 for s in sizes)
    row = len(extractor.layers) * int(extractor.dim)
    return frames * row * np.dtype(dtype).itemsize + len(sizes) * row * 4


def check_disk_space(extractor, sizes: list[float], out: str | Path, dtype: str = "float16",
                     log: Callable[[str], None] | None = None) -> int:
    """Estimate the bytes left to write (see ``estimate_bytes``), say it when several layers are kept, and
    raise StoreError if the local disk holding ``out`` has less free space; returns the estimate."""
    import shutil

    need = estimate_bytes(extractor, sizes, dtype)
    unit_total = sum(sizes)
    if log and len(extractor.layers) > 1:
        log(f"estimated store size: {format_size(need)} for {len(sizes)} utterance(s) ({len(extractor.layers)} "
            f"layers x {extractor.dim} x {dtype}; {format_size(need / max(unit_total, 1e-9))} per {extractor.unit})")
    if is_url(out):
        return need
    folder = Path(out).resolve()
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if need > free:
        raise StoreError(f"store {out} needs about {format_size(need)} for {len(sizes)} utterance(s) "
                         f"({len(extractor.layers)} layers x {extractor.dim}) but {folder} has only "
                         f"{format_size(free)} free; free space, keep fewer layers (--layers last or e.g. 6,12) "
                         f"or write the store elsewhere (--out)")
    return need


def _check_sizes(budget: float | None, shard_mb: float, chunk_mb: float, streams: int | None) -> None:
    """ConfigError (naming the option) for a budget, shard size or stream count that is not a positive number."""
    from .job import check_positive

    for option, value in (("--batch-seconds", budget), ("--shard-mb", shard_mb), ("chunk_mb", chunk_mb)):
        if value is not None:
            check_positive(option, value)
    if streams is not None:
        check_positive("--streams", streams, integer=True)


def _take_notes(extractor, ids: list[str], result: ExtractResult) -> bool:
    """Move the notes the extractor left while decoding ``ids`` (what it changed or left out: truncated
    text, frames without a face ...) into ``result.notes`` for the utterances that were stored; True if any."""
    notes = getattr(extractor, "notes", None)
    taken = {k: notes.pop(k) for k in ids if notes and k in notes}
    taken = {k: v for k, v in taken.items() if k not in result.failed}
    result.notes.update(taken)
    return bool(taken)


def _write_notes(result: ExtractResult) -> None:
    import fsspec

    fs, path = fsspec.core.url_to_fs(result.notes_file)
    if not result.notes:
        if fs.exists(path):
            fs.rm(path)
        return
    fs.makedirs(fs._parent(path), exist_ok=True)
    with fs.open(path, "w", encoding="utf-8") as f:
        for uid, note in result.notes.items():
            f.write(json.dumps({"id": uid, "note": note}, ensure_ascii=False) + "\n")


def _write_errors(result: ExtractResult) -> None:
    import fsspec

    fs, path = fsspec.core.url_to_fs(result.errors_file)  # a local file, or beside a store URL
    if not result.failed:
        if fs.exists(path):
            fs.rm(path)
        return
    fs.makedirs(fs._parent(path), exist_ok=True)
    with fs.open(path, "w", encoding="utf-8") as f:
        for uid, info in result.failed.items():
            f.write(json.dumps({"id": uid, **info}, ensure_ascii=False) + "\n")
