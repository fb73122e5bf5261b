"""`imo inspect STORE`."""

from __future__ import annotations

import json

import typer


def inspect(store: str = typer.Argument(..., help="Path or URL of an embedding store (.zarr)."),
            as_json: bool = typer.Option(False, "--json", help="Print a JSON object instead of text."),
            verify: bool = typer.Option(False, "--verify", help="Also check every file against its checksum and "
                                        "mark damaged parts (as `imo verify`).")) -> None:
    """Describe a store: utterances, frames, shapes, encoder, size on disk and the state of its parts.
    Exit status 1 when a part is damaged (each is named with the command that rebuilds it)."""
    from ..store import open_store
    from ..store.layout import format_size

    report = None
    if verify:
        from ..store.verify import verify_store

        report = verify_store(store, progress=False)
    st = open_store(store)
    damaged = [p for p in st.parts_status if p.status == "damaged"]
    m = st.meta
    info = {
        "store": str(store), "modality": m.modality, "utterances": len(st), "frames": st.n_frames,
        "layers": m.layers, "dim": m.dim, "frame_rate": m.frame_rate, "dtype": m.dtype,
        "encoder": m.encoder, "encoder_fingerprint": m.encoder_fingerprint,
        "manifest_fingerprint": m.manifest_fingerprint, "size_on_disk": st.size_on_disk(),
        "parts": [{"part": p.index, "status": p.status, "committed": p.n_committed, "expected": p.n_expected,
                   "failed": len(p.failed), "notes": len(p.notes), "locked": p.locked} for p in st.parts_status],
        "notes": {k: v for p in st.parts_status for k, v in p.notes.items()},
        "format": m.format_version,
        "damaged": {p.index: {"files": p.damage, "fix": st.rebuild_command(p.index)} for p in damaged},
    }
    if report is not None:
        info["verify"] = report.to_dict()
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        if damaged:
            raise typer.Exit(1)
        return
    done = sum(p.status == "complete" for p in st.parts_status)
    typer.echo(f"store        {store}")
    typer.echo(f"modality     {m.modality}")
    typer.echo(f"encoder      {m.encoder.get('type')} {m.encoder.get('source') or ''}".rstrip())
    typer.echo(f"utterances   {len(st)}  frames {st.n_frames}  failed {len(st.failed)}  with notes {len(info['notes'])}")
    typer.echo(f"shape        layers {m.layers} x dim {m.dim}  ({m.dtype}, {m.frame_rate or '-'} frames/s)")
    typer.echo(f"on disk      {format_size(st.size_on_disk())}")
    typer.echo(f"parts        {done}/{len(st.parts_status)} complete")
    for p in st.parts_status:
        lock = " (locked: a job is writing it)" if p.locked else ""
        if p.status == "missing":
            typer.echo(f"  part {p.index}: missing{lock or f' (run imo extract with --shard {p.index}/{m.n_parts})'}")
        elif p.status == "damaged":
            for key, why in p.damage.items():
                typer.echo(f"  part {p.index}: DAMAGED: {key}: {why}")
            typer.echo(f"    rebuild it with `{st.rebuild_command(p.index)}`")
        elif p.status != "complete":
            typer.echo(f"  part {p.index}: {p.status}, {p.n_committed}/{p.n_expected} utterances committed{lock}")
    old = [p.index for p in st.parts_status if p.status == "complete" and p.format < 2]
    if old:
        typer.echo(f"  note: part(s) {', '.join(map(str, old))} were written without checksums (store format 1): "
                   f"verified structurally only")
    for uid, note in list(info["notes"].items())[:5]:
        typer.echo(f"  note {uid}: {note}")
    if len(info["notes"]) > 5:
        typer.echo(f"  ... {len(info['notes']) - 5} more notes (--json lists them all)")
    typer.echo("config       " + json.dumps(m.encoder, sort_keys=True))
    if report is not None:
        for line in report.lines():
            typer.echo("verify       " + line)
    if damaged:
        typer.echo(f"{len(damaged)} damaged part(s): readers refuse them; rebuild each with the command shown", err=True)
        raise typer.Exit(1)
