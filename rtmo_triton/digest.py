"""The SHA-256 of a file, read in chunks: standard library only, because the served models (vendored
copy), the TensorRT CLI (no PyTorch) and the build all use it. ``hashlib.file_digest`` would do, but
the servers' Python may be 3.10."""
from __future__ import annotations

import hashlib
import os

CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the file at ``path``, without holding it in memory (plans and ONNX graphs are
    tens of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
