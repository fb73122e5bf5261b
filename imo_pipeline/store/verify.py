"""`imo verify STORE`: check every file of every part against its recorded checksum; mark damaged parts.

A damaged part gets ``status: "damaged"`` and ``damage: {"files": {file: reason}, ...}`` in its attrs, so
every reader refuses it and ``PartWriter`` (``imo extract --shard i/n``, or the re-import of a .csd)
rebuilds it from scratch. Parts a job is writing (locked) are skipped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..errors import LockError
from .integrity import decode_check, deep_check, disk_errors
from .lock import PartLock
from .reader import EmbeddingStore, PartStatus


@dataclass
class PartVerdict:
    index: int
    status: str                     # ok, damaged, writing, missing, locked
    damage: dict[str, str] = field(default_factory=dict)
    fix: str | None = None          # the command that rebuilds the part
    note: str = ""
    marked: bool = False            # marked damaged in the store by this run


@dataclass
class VerifyReport:
    store: str
    format: int
    parts: list[PartVerdict]
    bytes_checked: int = 0

    @property
    def damaged(self) -> list[PartVerdict]:
        return [p for p in self.parts if p.status == "damaged"]

    def to_dict(self) -> dict:
        return asdict(self) | {"damaged": len(self.damaged)}

    def lines(self) -> list[str]:
        """The report as printed by `imo verify`."""
        out = [f"store  {self.store}  (format {self.format}, {len(self.parts)} part(s), "
               f"{self.bytes_checked / 2**20:.1f} MB checked)"]
        for p in self.parts:
            if p.status == "ok":
                out.append(f"  part {p.index}: ok" + (f" ({p.note})" if p.note else ""))
                continue
            out.append(f"  part {p.index}: {p.status.upper() if p.status == 'damaged' else p.status}"
                       + (f" ({p.note})" if p.note else ""))
            for key, why in p.damage.items():
                out.append(f"    damaged file {key}: {why}")
            if p.fix and p.status in ("damaged", "missing", "writing"):
                out.append(f"    rebuild: {p.fix}" if p.status == "damaged" else f"    finish: {p.fix}")
        if self.damaged:
            out.append(f"{len(self.damaged)} damaged part(s); readers refuse them until the commands above rebuild them")
        else:
            out.append("no damage found")
        return out


def verify_store(path: str | Path, mark: bool = True, progress: bool = True) -> VerifyReport:
    """Check every recorded checksum of every complete part of the store at ``path`` (parts of format 1,
    which have none, are checked structurally and decoded) and, with ``mark``, mark each damaged part."""
    st = EmbeddingStore(path, allow_incomplete=True)
    listing = st.files.list()
    total = sum(rec[0] for p in st.parts_status if p.status == "complete"
                for rec in (p.attrs.get("checksums") or {}).values())
    report = VerifyReport(st.path, st.meta.format_version, [])
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"verify {Path(st.path).name}", disable=not progress)

    def seen(n: int) -> None:
        report.bytes_checked += n
        bar.update(n)

    for ps in st.parts_status:
        v = PartVerdict(ps.index, ps.status, dict(ps.damage), st.rebuild_command(ps.index))
        if ps.status == "missing":
            v.note = "never written" + (", a job is writing it" if ps.locked else "")
        elif ps.locked and ps.status != "damaged":
            v.status, v.note = "locked", "a job is writing it; verify it once that job is done"
        elif ps.status == "writing":
            v.note = (f"{ps.n_committed}/{ps.n_expected} utterances committed; structure checked, "
                      f"checksums are checked once the part is complete")
        elif ps.status == "complete":
            if ps.format >= 2:
                v.damage = deep_check(st.files, ps.name, ps.attrs, listing, seen)
            else:
                arrays = {a: st.root[ps.name][a] for a in ("values", "offsets", "ids", "pooled")}
                v.damage = decode_check(ps.name, arrays, ps.n_committed, ps.frames)
                v.note = "format 1: written without checksums, verified structurally and by decoding only"
            v.status = "damaged" if v.damage else "ok"
        if v.status == "damaged" and mark and ps.attrs.get("status") != "damaged":
            _mark(st, ps, v)
        report.parts.append(v)
    bar.close()
    return report


def _mark(st: EmbeddingStore, ps: PartStatus, v: PartVerdict) -> None:
    """Write ``status: damaged`` into the part's attrs (rewriting a corrupt zarr.json), under the part's lock."""
    lock = PartLock(Path(st.path) / f"{ps.name}.lock") if st.files.local else None
    try:
        with disk_errors(st.path):
            if lock:
                lock.acquire()
            attrs = dict(ps.attrs)
            attrs.update({"status": "damaged",
                          "damage": {"files": v.damage, "status_before": ps.attrs.get("status"), "found_by": "imo verify"}})
            st.files.write_json(f"{ps.name}/zarr.json", {"attributes": attrs, "zarr_format": 3, "node_type": "group"})
        v.marked = True
    except LockError:
        v.note = "a job took the part meanwhile; not marked"
    finally:
        if lock:
            lock.release()
