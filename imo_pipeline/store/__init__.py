"""The embedding store: one Zarr v3 group per modality + encoder, written in parts.

```
audio.zarr/                      root attrs: format, modality, encoder config, fingerprints, shapes
  part-00000-of-00004/           one group per --shard i/n job; attrs: status, committed {n, frames},
                                 format, checksums {file: [size, crc32]}, failed, notes
    values   float16 [frames, layers, dim]   sharded (few MB chunks in ~128 MB shard files); float32 with --dtype float32
    offsets  int64   [n + 1]                 utterance i is values[offsets[i]:offsets[i+1]]
    ids      string  [n]
    pooled   float32 [n, layers, dim]        mean over frames
  part-00000-of-00004.lock       present while a job writes that part
```
Only rows below a part's ``committed`` counts are valid; a writer advances them
after the data they cover is on disk, so a killed job loses at most one block.
Every value is finite; every read is verified (integrity.py); `imo verify` checks every checksum.
"""

from .layout import DTYPES, FORMAT_VERSION, NonFiniteError, StoreMeta
from .reader import EmbeddingStore, PartStatus, open_store
from .writer import PartWriter

__all__ = ["DTYPES", "FORMAT_VERSION", "NonFiniteError", "StoreMeta", "EmbeddingStore", "PartStatus", "PartWriter",
           "open_store"]
