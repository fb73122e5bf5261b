"""`imo inspect STORE`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..store import open_store


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return ""


def inspect(store: Path = typer.Argument(..., help="Path or URL of an embedding store (.zarr)."),
            as_json: bool = typer.Option(False, "--json", help="Print a JSON object instead of text.")) -> None:
    """Describe a store: utterances, frames, shapes, encoder, size on disk and the state of its parts."""
    st = open_store(store)
    m = st.meta
    info = {
        "store": str(store), "modality": m.modality, "utterances": len(st), "frames": st.n_frames,
        "layers": m.layers, "dim": m.dim, "frame_rate": m.frame_rate, "dtype": m.dtype,
        "encoder": m.encoder, "encoder_fingerprint": m.encoder_fingerprint,
        "manifest_fingerprint": m.manifest_fingerprint, "size_on_disk": st.size_on_disk(),
        "parts": [{"part": p.index, "status": p.status, "committed": p.n_committed, "expected": p.n_expected,
                   "failed": len(p.failed), "notes": len(p.notes), "locked": p.locked} for p in st.parts_status],
        "notes": {k: v for p in st.parts_status for k, v in p.notes.items()},
    }
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    done = sum(p.status == "complete" for p in st.parts_status)
    typer.echo(f"store        {store}")
    typer.echo(f"modality     {m.modality}")
    typer.echo(f"encoder      {m.encoder.get('type')} {m.encoder.get('source') or ''}".rstrip())
    typer.echo(f"utterances   {len(st)}  frames {st.n_frames}  failed {len(st.failed)}  with notes {len(info['notes'])}")
    typer.echo(f"shape        layers {m.layers} x dim {m.dim}  ({m.dtype}, {m.frame_rate or '-'} frames/s)")
    typer.echo(f"on disk      {_size(st.size_on_disk())}")
    typer.echo(f"parts        {done}/{len(st.parts_status)} complete")
    for p in st.parts_status:
        lock = " (locked: a job is writing it)" if p.locked else ""
        if p.status == "missing":
            typer.echo(f"  part {p.index}: missing{lock or f' (run imo extract with --shard {p.index}/{m.n_parts})'}")
        elif p.status != "complete":
            typer.echo(f"  part {p.index}: {p.status}, {p.n_committed}/{p.n_expected} utterances committed{lock}")
    for uid, note in list(info["notes"].items())[:5]:
        typer.echo(f"  note {uid}: {note}")
    if len(info["notes"]) > 5:
        typer.echo(f"  ... {len(info['notes']) - 5} more notes (--json lists them all)")
    typer.echo("config       " + json.dumps(m.encoder, sort_keys=True))
