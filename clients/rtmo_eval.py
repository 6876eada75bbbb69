#!/usr/bin/env python3
"""Keypoint AP of the RTMO ensemble on Triton over a COCO-format annotation file; see ``--help``.

A thin entry point: the work lives in ``rtmo_triton.client.evaluate``. Runs
from a checkout without installing the package.
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rtmo_triton.client.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
