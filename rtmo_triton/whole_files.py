"""Files written whole: a reader, or a run stopped while writing, sees the old content or the new,
never a part. Used wherever a process writes a result others rely on (TensorRT plans, their records
and timing caches, vendored package archives, the clients' result files)."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[Path]:
    """The path to write instead of ``path`` (beside it, so the rename stays on one file system); it
    replaces ``path`` when the block ends without an exception and never outlives one. For writers
    that stream (tarfile); ``write_whole`` for data already in memory."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    try:
        yield partial
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def write_whole(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` beside ``path``, then rename over it."""
    with writing(path) as partial:
        if isinstance(data, str):
            partial.write_text(data)
        else:
            partial.write_bytes(data)
