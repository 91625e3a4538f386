"""Plots written like every other output: rendered in memory, then written whole (``atomic``).

``fig.savefig(path)`` writes the file as it renders, so a run killed meanwhile leaves half a PNG
under the final name. ``save_figure`` renders into memory first (format from the file's suffix, as
savefig would choose it) and hands the bytes to ``atomic_write_bytes``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from mcutrain.io.atomic import atomic_write_bytes


def save_figure(fig, path: str | os.PathLike, *, dpi: int) -> Path:
    """Write matplotlib figure ``fig`` to ``path`` atomically; returns the path."""
    image = io.BytesIO()
    fig.savefig(image, format=Path(path).suffix.lstrip(".").lower() or "png", dpi=dpi)
    atomic_write_bytes(path, image.getvalue())
    return Path(path)
