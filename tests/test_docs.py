"""The README and docs/ say only what the tree holds: links, anchors, make targets, python -m modules.

No server, no network: plain text checks over README.md and docs/*.md.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAKEFILES = [ROOT / "Makefile", ROOT / "perf" / "perf.mk"]
README_MAX_LINES = 220
# python -m targets that are installed tools, not modules of this tree
EXTERNAL_MODULES = {"pip", "pytest", "virtualenv"}

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]+`")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
MAKE = re.compile(r"\bmake\s+((?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*)([a-z][a-z0-9_-]*)")
PYTHON_M = re.compile(r"\bpython3?\s+-m\s+([A-Za-z_][A-Za-z0-9_.]*)")
TARGET = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_-]*)\s*:(?!=)", re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped but hyphens, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's slug, with GitHub's -1, -2 suffixes for repeated headings."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        base = slug(heading)
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    text = INLINE_CODE.sub("", text)
    return LINK.findall(text)


def code_spans(page: Path) -> list[str]:
    """The text inside fenced code blocks and inline backticks."""
    text = page.read_text()
    blocks = [m.group(0) for m in FENCE.finditer(text)]
    spans = INLINE_CODE.findall(FENCE.sub("", text))
    return blocks + spans


def make_targets() -> set[str]:
    targets = set()
    for makefile in MAKEFILES:
        targets.update(TARGET.findall(makefile.read_text()))
    return targets


def relative(link: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", link, re.I) and not link.startswith("//")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for link in links(page):
        if not relative(link):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            shown = target.relative_to(ROOT) if target.is_relative_to(ROOT) else target
            broken.append(f"{link}: no file {shown}")
            continue
        if anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link}: no heading #{anchor} in {target.relative_to(ROOT)}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_make_targets_exist(page: Path) -> None:
    targets = make_targets()
    named = {m.group(2) for span in code_spans(page) for m in MAKE.finditer(span)}
    missing = sorted(named - targets)
    assert not missing, f"{page.name} names make targets the Makefiles lack: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_modules_exist(page: Path) -> None:
    missing = []
    for module in set(PYTHON_M.findall(page.read_text())):
        if module.split(".")[0] in sys.stdlib_module_names | EXTERNAL_MODULES:  # python3 -m venv, pip
            continue
        base = ROOT / module.rstrip(".").replace(".", "/")
        if module.endswith("."):  # "python -m perf.*": the package itself
            found = (base / "__init__.py").is_file()
        else:
            found = base.with_suffix(".py").is_file() or (base / "__main__.py").is_file()
        if not found:
            missing.append(module)
    assert not missing, f"{page.name} names python -m modules not in the tree: {sorted(missing)}"


def test_readme_is_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines, at most {README_MAX_LINES}"


def test_checks_can_fail() -> None:
    """The parsers find what they look for, so an empty pass means a clean page, not a blind test."""
    assert slug("The GPU-resident pipeline (`PREPROCESS=gpu`)") == "the-gpu-resident-pipeline-preprocessgpu"
    assert slug("Accuracy through the server (COCO / CrowdPose keypoint AP)") == \
        "accuracy-through-the-server-coco--crowdpose-keypoint-ap"
    assert {"test", "build-engines", "perf"} <= make_targets()
    assert [m.group(2) for m in MAKE.finditer("make build-engines ENGINE=trt")] == ["build-engines"]
    assert [m.group(2) for m in MAKE.finditer("make CHECKPOINT=x.pth serve")] == ["serve"]
    assert any(links(README)), "README.md has no links: the link parser is broken"
