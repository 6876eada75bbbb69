"""Which images to send, and a unique output name for each.

Names mirror the path below the folder they were found in, so images with the
same stem in different sub-folders (or with different extensions) never
overwrite each other's outputs.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True)
class ImageFile:
    path: Path
    key: str
    """Unique output stem, '/'-separated relative path without extension (e.g. ``sub/img``)."""


def is_image_name(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def find_images(paths: Iterable[str | os.PathLike]) -> list[ImageFile]:
    """Files named on the command line (taken as they are) and images found below folders.

    Folders are walked recursively in sorted order, skipping hidden entries and
    not following symlinked folders. A path that does not exist raises
    FileNotFoundError; the same file reached twice is listed once.
    """
    found: list[tuple[Path, PurePosixPath]] = []
    for arg in paths:
        root = Path(arg)
        if root.is_dir():
            found.extend((p, PurePosixPath(p.relative_to(root).as_posix())) for p in _walk(root))
        elif root.is_file():
            found.append((root, PurePosixPath(root.name)))
        else:
            raise FileNotFoundError(f"no such file or folder: {arg}")
    seen: set[Path] = set()
    keys: set[str] = set()
    result = []
    for path, rel in found:
        real = path.resolve()
        if real in seen:
            continue
        seen.add(real)
        key = _unique(str(rel.with_suffix("")), rel.suffix.lstrip(".").lower(), keys)
        keys.add(key)
        result.append(ImageFile(path, key))
    return result


def _walk(root: Path) -> list[Path]:
    images = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        images.extend(Path(folder, f) for f in sorted(files) if not f.startswith(".") and is_image_name(f))
    return images


def _unique(stem: str, ext: str, taken: set[str]) -> str:
    candidates = [stem, f"{stem}_{ext}"] if ext else [stem]
    for candidate in candidates:
        if candidate not in taken:
            return candidate
    n = 2
    while f"{candidates[-1]}_{n}" in taken:
        n += 1
    return f"{candidates[-1]}_{n}"
