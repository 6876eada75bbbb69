"""The container recipes, checked as far as a machine without Docker can: they parse, copy files
that exist, start a console script we ship, and use the serving image the packages are built for."""
from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import dockerfile
import pytest

from rtmo_triton.build.packages import TRITON_CONTAINER

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "deploy" / "docker").glob("*.Dockerfile"))


def commands(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    return [(c.cmd.upper(), c.value) for c in dockerfile.parse_file(str(path))]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_copies_what_exists_and_starts_what_we_ship(recipe):
    scripts = {e.name for e in entry_points(group="console_scripts") if e.value.startswith("rtmo_triton.")}
    for cmd, value in commands(recipe):
        if cmd == "COPY" and value[0] != ".":
            assert all((ROOT / src).exists() for src in value[:-1]), value
        if cmd == "ENTRYPOINT":
            assert value[0] in scripts or value[0] == "make", value


def test_serving_image_is_the_one_the_packages_are_built_for():
    args = dict(v[0].split("=", 1) for c, v in commands(ROOT / "deploy/docker/gpu.Dockerfile") if c == "ARG")
    assert args["TRITON_IMAGE"] == TRITON_CONTAINER
    plan = dict(v[0].split("=", 1) for c, v in commands(ROOT / "deploy/docker/plan.Dockerfile") if c == "ARG")
    assert plan["TENSORRT_IMAGE"].rsplit(":", 1)[1] == TRITON_CONTAINER.rsplit(":", 1)[1], \
        "the plan must be built with the serving image's TensorRT"


def test_the_serving_side_needs_only_the_standard_library():
    """The images install our package without dependencies: rtmo-serve must import with no site-packages."""
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import rtmo_triton.serve.cli"
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
