"""The Python models' code; each model's ``model.py`` (written by the build) imports its module here.

Importing this package first puts the packages the repository carries for the running interpreter
on ``sys.path`` (``served.bundle``), before any model imports numpy, OpenCV or onnxruntime. The
vendored copy sits at ``<model>/<version>/rtmo_triton/served/models/``, three levels below the
version folder.
"""
from pathlib import Path

from ..bundle import use_bundled_packages

use_bundled_packages(Path(__file__).resolve().parents[3])
