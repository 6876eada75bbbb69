"""Files written whole: a reader, or a run stopped while writing, sees the old content or the new,
never a part. Used wherever a process writes a result others rely on (TensorRT plans and timing
caches, the clients' result files)."""
from __future__ import annotations

import os
from pathlib import Path


def write_whole(path: str | os.PathLike, data: bytes | str) -> None:
    """Write beside ``path``, then rename over it; the partial file never outlives a failure."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    try:
        if isinstance(data, str):
            partial.write_text(data)
        else:
            partial.write_bytes(data)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
