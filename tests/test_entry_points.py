"""Plugins through entry points: an installed distribution that declares
``[project.entry-points."eis.plugins"]`` is imported before names are resolved (``eis tools``, suites naming
its datasets and architectures), and one that fails to import is a one-line error naming the distribution
and the module.

The distributions here are real ones as far as ``importlib.metadata`` can tell: a package folder and a
``*.dist-info`` folder (METADATA, entry_points.txt) on ``sys.path`` / ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tiny_user_model import cli_env
from typer.testing import CliRunner

import eis.plugins
import eis.zoo
from eis.cli import app
from eis.errors import EisError
from eis.tools.base import TOOLS
from eis.zoo.archs import ARCHS
from eis.zoo.datasets import DATASETS

PLUGIN = '''
"""A toy eis plugin: one tool, one dataset (with its info: never built to check a suite), one arch."""

import dataclasses
from typing import ClassVar

import torch
from torch import nn

from eis.tools.base import AttributionTool, register_tool
from eis.zoo.archs import ARCHS
from eis.zoo.datasets import DATASETS, DatasetInfo, ImageData


@register_tool
class ToyMap(AttributionTool):
    name: ClassVar[str] = "toy_entry_point_map"
    summary: ClassVar[str] = "the input itself"
    scale: float = 1.0

    def attribute(self, model, inputs, target):
        return inputs * self.scale


def toy_data():
    raise RuntimeError("checking a suite must not build the toy data")


DATASETS.register("toy_ep_data", toy_data, info=DatasetInfo(num_classes=4, input_shape=(1, 12, 12)))


@ARCHS.register("toy_ep_arch")
def toy_arch(channels, num_classes, height):
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * height * height, num_classes))
'''

SUITE = """
[defaults]
dataset = "toy_ep_data"
arch = "toy_ep_arch"

[[case]]
name = "toy-ep-patch"
flaw = { kind = "patch", target = 1, pattern = "checkerboard" }

[[population]]
name = "toy-ep-detect"
clean = 2
flawed = 2
flaws = ["patch", "blend"]
seed = 7
"""


def distribution(site: Path, name: str, module: str, source: str) -> None:
    """Install distribution ``name`` into ``site`` by hand: package ``module`` and its dist-info folder,
    whose entry point ``toy`` of the ``eis.plugins`` group names the module."""
    (site / module).mkdir(parents=True)
    (site / module / "__init__.py").write_text(textwrap.dedent(source))
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[eis.plugins]\ntoy = {module}\n")


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """A site folder on sys.path with the toy plugin's distribution; this process rescans entry points and
    forgets the toy's registrations afterwards."""
    site = tmp_path / "site"
    distribution(site, "toy-eis-plugin", "toy_eis_plugin", PLUGIN)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setattr(eis.plugins, "_ENTRY_POINTS", None)  # as in a fresh process; restored after
    yield site
    sys.modules.pop("toy_eis_plugin", None)
    sys.modules.pop("broken_eis_plugin", None)
    for registry, name in ((TOOLS, "toy_entry_point_map"), (DATASETS, "toy_ep_data"), (ARCHS, "toy_ep_arch")):
        if name in registry:
            registry.unregister(name)


def test_eis_tools_lists_an_installed_plugins_tool(installed, tmp_path):
    """A real `eis` process with the distribution on its path lists the plugin's tool, no EIS_PLUGINS."""
    env = cli_env(tmp_path / "home")
    env["PYTHONPATH"] = str(installed)  # the site folder only: the distribution is found as installed
    env.pop("EIS_PLUGINS", None)
    res = subprocess.run(
        [str(Path(sys.executable).with_name("eis")), "tools", "--family", "attribution"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    row = next(line for line in res.stdout.splitlines() if "toy_entry_point_map" in line)
    assert "attribution" in row and "scale=1.0" in row


def test_a_suite_naming_the_plugins_dataset_and_arch_validates(installed, tmp_path):
    """Reading a suite loads the installed plugins first; its specs validate from the dataset's info
    (the toy factory raises if called) and get their training defaults from it."""
    suite = tmp_path / "toy.toml"
    suite.write_text(SUITE)
    assert "toy_ep_data" not in DATASETS
    specs = eis.zoo.suite_cases(str(suite))
    assert [s.name for s in specs][:1] == ["toy-ep-patch"] and len(specs) == 5
    assert {s.dataset for s in specs} == {"toy_ep_data"} and {s.arch for s in specs} == {"toy_ep_arch"}
    assert all((s.flaw.get("target") or 0) < 4 for s in specs)
    assert specs[0].training() == {"epochs": 20, "batch_size": 64, "lr": 2e-3}
    assert len({s.case_id for s in specs}) == 5
    assert "toy_entry_point_map" in TOOLS


def test_entry_points_import_once_per_process(installed):
    first = eis.plugins.load_entry_points()
    module = sys.modules["toy_eis_plugin"]
    assert "toy_eis_plugin" in first
    assert eis.plugins.load_entry_points() == first  # no second scan, no second import
    assert sys.modules["toy_eis_plugin"] is module
    assert eis.plugins.load_plugins()[: len(first)] == first  # before $EIS_PLUGINS


def test_a_broken_entry_point_is_one_line_naming_distribution_and_module(installed, monkeypatch):
    distribution(installed, "broken-eis-plugin", "broken_eis_plugin", 'raise ValueError("bad\\nplugin")\n')
    importlib.invalidate_caches()
    with pytest.raises(EisError) as info:
        eis.plugins.load_entry_points(rescan=True)
    message = str(info.value)
    assert "\n" not in message
    assert "'broken-eis-plugin'" in message and "broken_eis_plugin" in message and "ValueError" in message
    with pytest.raises(EisError, match="broken-eis-plugin"):  # the same error again, not a half import
        eis.plugins.load_entry_points()
    assert "toy_entry_point_map" in TOOLS  # the healthy plugin beside it still loaded

    res = CliRunner().invoke(app, ["zoo", "suites"], env={"COLUMNS": "400"})
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "broken-eis-plugin" in lines[0]


def test_a_missing_module_names_it(installed):
    info = installed / "toy_eis_plugin-0.1.dist-info" / "entry_points.txt"
    info.write_text("[eis.plugins]\ntoy = toy_eis_plugin_gone\n")
    importlib.invalidate_caches()
    with pytest.raises(EisError) as info:
        eis.plugins.load_entry_points(rescan=True)
    assert "'toy_eis_plugin_gone'" in str(info.value) and "'toy-eis-plugin'" in str(info.value)
    assert "ModuleNotFoundError" in str(info.value)
