"""Extraction on a dask.distributed cluster: one task per store part.

``extract_on_cluster`` submits ``--shard i/n`` for every part ``i`` as one task
to an existing scheduler (``tcp://host:port``) or to a local cluster of worker
processes. Each worker process builds the encoder once and keeps it for every
part it runs; the client shows one progress bar over all utterances, fed by
events the workers send after each batch. A task that fails is retried
(``retries``) and then reported, while the other parts go on; re-running the
same command finishes only what is missing, because every part resumes.

The job is the same ``ExtractJob`` the local path runs (``imo_pipeline.job``);
its device is resolved once, here on the client (``ExtractJob.resolved``).
GPUs: when the device is ``cuda`` each task asks for the dask resource
``GPU=1``, so start one worker per GPU with ``--resources GPU=1`` (for example
``CUDA_VISIBLE_DEVICES=k dask worker tcp://host:8786 --nthreads 1 --resources GPU=1``);
``auto`` picks ``cuda`` when the workers offer that resource. A local cluster
(``--workers N``) on a machine with CUDA declares one GPU per worker and places
worker ``k`` on ``cuda:k mod n_gpus`` (``ExtractJob.worker_device``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from .errors import ConfigError, ImoError
from .extract import ExtractResult
from .job import ExtractJob
from .manifest import Manifest, ShardSpec


@dataclass
class PartReport:
    """What one task sends back: the part's result and where it ran."""

    result: ExtractResult
    worker: str
    pid: int
    loaded_encoder: bool             # True if this task built the encoder (first part on that worker)


@dataclass
class ClusterResult:
    """All parts of a cluster run: per-part results, and the parts whose task failed for good."""

    parts: dict[int, PartReport] = field(default_factory=dict)
    part_errors: dict[int, str] = field(default_factory=dict)
    n_parts: int = 0

    @property
    def failed(self) -> dict[str, dict[str, str]]:
        return {k: v for r in self.parts.values() for k, v in r.result.failed.items()}

    @property
    def done(self) -> int:
        return sum(r.result.done for r in self.parts.values())

    @property
    def skipped(self) -> int:
        return sum(r.result.skipped for r in self.parts.values())

    def summary(self) -> str:
        secs = max((r.result.seconds for r in self.parts.values()), default=0.0)
        workers = len({r.worker for r in self.parts.values()})
        return (f"{len(self.parts)}/{self.n_parts} parts on {workers} worker(s): done {self.done}, "
                f"already present {self.skipped}, failed {len(self.failed)}, parts failed {len(self.part_errors)} "
                f"(longest part {secs:.1f} s)")


# --- worker side ------------------------------------------------------------------
_ENCODERS: dict[str, Any] = {}        # per worker process: encoder key -> built extractor
_MANIFESTS: dict[tuple, Manifest] = {}
_LOCK = threading.Lock()              # worker threads share the caches


def _encoder(job: ExtractJob, worker) -> tuple[Any, bool]:
    """The worker's extractor for ``job``, built on first use and cached for later parts."""
    device = job.worker_device(worker.name if worker is not None else None)
    key = job.encoder_key(device)
    with _LOCK:
        if key in _ENCODERS:
            return _ENCODERS[key], False
        ext = job.build_extractor(device)
        _ENCODERS[key] = ext
        return ext, True


def _manifest(job: ExtractJob) -> Manifest:
    st = Path(job.manifest).stat()
    key = (job.manifest, job.data_root, st.st_mtime_ns, st.st_size)
    with _LOCK:
        if key not in _MANIFESTS:
            _MANIFESTS.clear()
            _MANIFESTS[key] = job.load_manifest()
        return _MANIFESTS[key]


def extract_part(job: ExtractJob, shard: ShardSpec, topic: str | None = None) -> PartReport:
    """Run part ``shard`` of ``job`` on this worker (also callable without a cluster); sends progress events
    to ``topic``."""
    try:
        from distributed import get_worker
        worker = get_worker()
    except (ImportError, ValueError):
        worker = None
    ext, loaded = _encoder(job, worker)

    def on_batch(n_new: int, amount: float) -> None:
        if worker is not None and topic:
            worker.log_event(topic, {"part": shard.index, "n": n_new, "pid": os.getpid()})

    result = dataclasses.replace(job, shard=shard).run(ext, _manifest(job), progress=False, on_batch=on_batch)
    return PartReport(result, worker.address if worker else "local", os.getpid(), loaded)


# --- client side --------------------------------------------------------------------
def connect(scheduler: str | None, workers: int | None, gpu: bool = False):
    """(client, cluster or None): connect to ``scheduler`` or start ``workers`` local worker processes (one
    thread each); for extraction and sweeps. The caller closes both."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except (OSError, TimeoutError, ValueError) as e:
            raise ConfigError(f"--scheduler {scheduler}: no dask scheduler answered ({e}); start one with "
                              f"`dask scheduler` and give its tcp://HOST:PORT address") from None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR, resources={"GPU": 1} if gpu else None)
    return Client(cluster), cluster


def check_cluster_options(scheduler: str | None, workers: int | None, parts: int | None, retries: int) -> None:
    """ConfigError (naming the option) for a cluster request that cannot run; checked before anything starts."""
    from .job import check_positive

    if workers is not None and scheduler is not None:
        raise ConfigError("give either --workers N (a local cluster) or --scheduler tcp://HOST:PORT, not both")
    if scheduler is None:
        check_positive("--workers", workers, integer=True)
    if parts is not None:
        check_positive("--parts", parts, integer=True)
    check_positive("--retries", retries, integer=True, minimum=0)


def default_parts(n_workers: int, out: str) -> int:
    """Parts of an existing store (a resume must keep them), else two per worker."""
    try:
        from .store import open_store
        return open_store(out, allow_incomplete=True).meta.n_parts
    except ImoError:
        return max(1, 2 * n_workers)


def extract_on_cluster(job: ExtractJob, scheduler: str | None = None, workers: int | None = None,
                       parts: int | None = None, retries: int = 2, progress: bool = True,
                       on_progress: Callable[[dict], None] | None = None) -> ClusterResult:
    """Extract every part of ``job`` as one dask task each; see the module docstring.

    ``parts`` defaults to the store's part count if it exists, else two per
    worker. ``on_progress(event)`` is called on the client with each batch event
    ``{"part", "n" (utterances stored), "pid" (worker process)}`` (for tests and custom UIs). A part whose
    task still fails after ``retries`` retries lands in ``part_errors``; the others complete. The job's
    ``shard`` must be whole (0/1): every part runs as a task.
    """
    from distributed import as_completed

    check_cluster_options(scheduler, workers, parts, retries)
    if job.shard.count != 1:
        raise ConfigError(f"--shard {job.shard} runs one part as a batch job; with --workers/--scheduler every part "
                          f"runs as a dask task, so leave --shard out (use --parts N to set how many)")
    job = job.for_workers()
    if scheduler is None:  # local worker processes see this machine's devices
        job = job.resolved()
        job = dataclasses.replace(job, spread_gpus=job.device == "cuda")
    manifest = job.load_manifest()  # fail fast on a bad manifest, and count utterances
    client, cluster = connect(scheduler, workers, job.wants_gpu)
    try:
        info = client.scheduler_info()
        n_workers = len(info["workers"])
        gpu_workers = any(w.get("resources", {}).get("GPU") for w in info["workers"].values())
        job = job.resolved(gpu_workers=gpu_workers)
        if job.wants_gpu and not gpu_workers:
            raise ConfigError(f"--device {job.device}: no worker of {client.scheduler.address} offers a GPU "
                              f"resource; start workers with `dask worker ADDRESS --resources GPU=1` (one per GPU)")
        n_parts = parts or default_parts(n_workers, job.out)
        specs = [ShardSpec(i, n_parts) for i in range(n_parts)]
        out = ClusterResult(n_parts=n_parts)
        topic = f"imo-progress-{uuid.uuid4().hex[:8]}"
        seen: dict[int, int] = {}
        bar = tqdm(total=len(manifest), unit="utt", desc=f"{job.modality} {n_parts} parts on {n_workers} workers",
                   disable=not progress, dynamic_ncols=True)
        lock = threading.Lock()

        def count(event: tuple[float, dict]) -> None:
            part, n = event[1]["part"], event[1]["n"]
            with lock:
                if part in out.parts or part in out.part_errors:
                    return  # a late event of a finished part: its final count is in already
                seen[part] = seen.get(part, 0) + n
                bar.update(n)
            if on_progress:
                on_progress(event[1])

        client.subscribe_topic(topic, count)
        futures = {client.submit(extract_part, job, s, topic, key=f"imo-extract-{topic}-part-{s.index}",
                                 retries=retries, pure=False,
                                 resources={"GPU": 1} if job.wants_gpu else None): s for s in specs}
        for fut in as_completed(futures):
            s = futures[fut]
            if fut.status == "finished":
                report = fut.result()
                r = report.result
                with lock:
                    bar.update(r.done + r.skipped + len(r.failed) - seen.get(s.index, 0))
                    out.parts[s.index] = report
            else:
                exc = fut.exception()
                msg = str(exc) if isinstance(exc, ImoError) else f"{type(exc).__name__}: {exc}"
                with lock:
                    out.part_errors[s.index] = msg
                    bar.update(len(manifest.shard(s)) - seen.get(s.index, 0))
                tqdm.write(f"part {s} failed after {retries + 1} attempt(s): {msg}")
        bar.close()
        client.unsubscribe_topic(topic)
        return out
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
