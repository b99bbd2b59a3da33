"""The documentation site builds strictly and offline, and the code it shows runs.

A broken link, anchor, snippet path or API reference fails ``mkdocs build --strict`` and so this test; every
fenced block marked ``{.runnable}`` in a page runs here (the blocks of one page in order, in one namespace).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from eis.runner.plugins import load_builtins
from eis.tools.base import TOOLS
from eis.zoo.archs import ARCHS
from eis.zoo.datasets import DATASETS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RUNNABLE = re.compile(r"^```python *\{ *\.runnable *\} *\n(.*?)^```$", re.S | re.M)
PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if RUNNABLE.search(p.read_text()))


def test_site_builds_strictly_and_offline(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    pages = list(site.rglob("*.html"))
    assert (site / "index.html").exists() and (site / "reference" / "zoo" / "index.html").exists()
    # the examples are included from examples/, not copied: the rendered page holds the file's text
    example = (site / "examples" / "custom_circuit_method" / "index.html").read_text()
    assert "custom_circuit_method" in example and "check_tool" in example
    # nothing the pages load comes from the network (the theme's web fonts are off)
    remote = [p.name for p in pages if re.search(r"<link[^>]+href=\"https?://", p.read_text())]
    assert not remote, f"pages loading remote resources: {remote[:5]}"


def test_every_example_script_is_on_a_page():
    included = " ".join(p.read_text() for p in DOCS.rglob("*.md"))
    for script in sorted((ROOT / "examples").glob("*.py")):
        assert f'--8<-- "examples/{script.name}"' in included, f"examples/{script.name} is on no docs page"


def test_readme_links_resolve():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local, "the README links into the docs"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_pages_with_runnable_blocks_are_found():
    assert {"getting-started.md", "guide/zoo.md", "guide/benchmark.md", "guide/plugins.md"} <= set(PAGES)


@pytest.mark.parametrize("page", PAGES)
def test_runnable_blocks_run(page, smoke_cases, tmp_path, monkeypatch):
    # blocks register datasets, architectures and tools: keep the registries as the other tests expect them
    load_builtins()  # first, so that the copies hold the built-in tools
    for registry in (DATASETS, ARCHS, TOOLS):
        monkeypatch.setattr(registry, "_items", dict(registry._items))
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    module = types.ModuleType(f"docs_{Path(page).stem}")  # a module, as a script's classes have one
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for i, block in enumerate(RUNNABLE.findall((DOCS / page).read_text())):
        exec(compile(block, f"docs/{page} (runnable block {i + 1})", "exec"), module.__dict__)
