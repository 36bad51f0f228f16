"""npe2 writer: a Labels layer -> a new napari-ivoma mask store (never overwrites)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .engine import write_labels_store

__all__ = ["write_labels", "store_path_of"]


def store_path_of(data: Any) -> Path | None:
    """Folder of the mask store whose ``labels`` zarr array ``data`` is, else ``None``."""
    import zarr

    if not isinstance(data, zarr.Array):
        return None
    root = getattr(data.store, "root", None)
    if root is None:
        return None
    path = Path(os.fspath(root))
    name = data.path.strip("/")
    if name != "labels":
        return None
    return path


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """Save Labels ``data`` (T, H, W) or (H, W) as a new mask store at ``path``.

    When ``data`` already is the labels array of a mask store at ``path`` nothing is written
    (brush edits on such a layer are saved as they happen).  Any other existing ``path`` is
    refused; saving to a new path copies the masks.
    """
    from napari.utils.notifications import show_info

    target = Path(path)
    current = store_path_of(data)
    if current is not None and target.exists() and _same_path(current, target):
        show_info(f"{target} is this layer's own mask store: it is saved already (edits are written as you paint)")
        return [str(target)]
    source = (meta.get("metadata") or {}).get("ivoma_source")
    write_labels_store(target, data, source=source)
    return [str(target)]


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
