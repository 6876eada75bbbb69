#!/usr/bin/env python3
"""Pose with person IDs on a video, camera, stream or folder of frames via the RTMO ensemble; see ``--help``.

A thin entry point: the work lives in ``rtmo_triton.client.video`` so it can be
imported and tested. Runs from a checkout without installing the package.
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rtmo_triton.client.video import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
