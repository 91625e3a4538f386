"""Re-save the bundled float backbone in the current container format (issue 11).

The earlier container's checksum covered only the tensor data; the current one covers the whole file
(mcutrain/io/container.py). This re-containers mcutrain/assets/mbv2-w0.35-fmnist64.safetensors with
the same kind, version, tensors and meta, except the per-run timings of ``training.last_epoch``
(``seconds``, ``images_per_s``): they differ between identical runs, and pretrain no longer writes them
into the checkpoint, so the file is what a rerun of `make backbone` writes. Every other field is kept.

Run from the repository root:  python scripts/resave_bundled_backbone.py [PATH]
Idempotent: a file already in the current format without timings is rewritten byte-identical.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from mcutrain.assets import DEFAULT_BACKBONE
from mcutrain.io.container import migrate_container

TIMING_FIELDS = ("seconds", "images_per_s")


def drop_timings(kind: str, meta: dict) -> None:
    if kind != "float-checkpoint":
        raise SystemExit(f"expected a float checkpoint, got a {kind!r} file")
    last = meta.get("training", {}).get("last_epoch", {})
    for key in TIMING_FIELDS:
        last.pop(key, None)


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else DEFAULT_BACKBONE
    migrate_container(path, path, change_meta=drop_timings)
    print(f"{path}: sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
