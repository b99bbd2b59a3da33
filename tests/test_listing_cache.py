"""Listings (``eis tools``, ``eis tracks``, ``eis zoo suites``) answer from a cache keyed by what their rows
are computed from, and rebuild whenever that changes."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from eis.cli import app, listing


def test_rows_are_built_once_per_fingerprint(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EIS_HOME", str(tmp_path))
    monkeypatch.delenv("EIS_PLUGINS", raising=False)
    calls = []

    def build() -> list[list[str]]:
        calls.append(1)
        return [["a", str(len(calls))]]

    assert listing.cached_rows("x", build) == [["a", "1"]]
    assert listing.cached_rows("x", build) == [["a", "1"]] and len(calls) == 1  # from the cache
    monkeypatch.setattr(listing, "fingerprint", lambda state=None: "another")
    assert listing.cached_rows("x", build) == [["a", "2"]]  # the code changed: rebuilt
    (tmp_path / "listings" / "x.json").write_text("{not json")
    assert listing.cached_rows("x", build) == [["a", "3"]]  # a damaged cache: rebuilt
    monkeypatch.setenv("EIS_PLUGINS", "some_module")
    assert listing.cached_rows("x", build) == [["a", "4"]]  # plugins from the environment: never cached
    assert listing.cached_rows("x", build) == [["a", "5"]]


def test_the_fingerprint_follows_source_files(tmp_path) -> None:
    (tmp_path / "pkg").mkdir()
    src = tmp_path / "pkg" / "tools.py"
    src.write_text("x = 1\n")
    before = listing._tree_state(tmp_path)
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10**9))
    assert listing._tree_state(tmp_path) != before
    src.write_text("x = 12\n")
    assert listing._tree_state(tmp_path)[0][1] == 7
    assert listing.fingerprint() == listing.fingerprint()


def test_a_fresh_process_fills_the_cache_and_prints_the_same(tmp_path) -> None:
    env = {**os.environ, "EIS_HOME": str(tmp_path), "COLUMNS": "300"}
    env.pop("EIS_PLUGINS", None)

    def tools() -> subprocess.CompletedProcess:
        argv = [sys.executable, "-c", "from eis.cli import main; main()", "tools"]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)

    first = tools()
    assert first.returncode == 0 and "neural_cleanse" in first.stdout, first.stderr
    assert (tmp_path / "listings" / "tools.json").is_file()
    again = tools()
    assert again.returncode == 0 and again.stdout == first.stdout


def test_a_process_with_its_own_registrations_lists_them_and_stores_nothing(tmp_path, monkeypatch) -> None:
    from eis.tools.base import TOOLS

    monkeypatch.setenv("EIS_HOME", str(tmp_path))
    monkeypatch.delenv("EIS_PLUGINS", raising=False)
    runner = CliRunner()
    assert "saliency" in runner.invoke(app, ["tools"], terminal_width=300).output
    monkeypatch.setattr(TOOLS, "_items", {k: v for k, v in TOOLS._items.items() if k != "saliency"})
    res = runner.invoke(app, ["tools"], terminal_width=300)
    assert res.exit_code == 0 and "saliency" not in res.output and "neural_cleanse" in res.output
    assert not (tmp_path / "listings" / "tools.json").exists()
    bad = runner.invoke(app, ["tools", "--family", "nope"])
    assert bad.exit_code == 2 and "valid: attribution" in bad.output


def test_the_built_cases_listing_follows_the_zoo(smoke, monkeypatch) -> None:
    """``eis zoo list`` answers from the cache while the zoo's files are unchanged, and rebuilds its rows
    when any changes (here: a damaged copy of a case appears, and is not listed)."""
    import shutil

    from eis.zoo import artifact

    monkeypatch.delenv("EIS_PLUGINS", raising=False)
    runner = CliRunner()
    first = runner.invoke(app, ["zoo", "list"], terminal_width=400)
    again = runner.invoke(app, ["zoo", "list"], terminal_width=400)
    assert first.exit_code == again.exit_code == 0 and first.output == again.output
    name = next(iter(smoke))
    assert name in first.output
    before = listing.zoo_state()
    copy = artifact.zoo_dir() / "ffffffffffffffff"
    shutil.copytree(smoke[name].root, copy)
    try:
        (copy / "model.safetensors").write_bytes(b"damaged")
        assert listing.zoo_state() != before
        after = runner.invoke(app, ["zoo", "list"], terminal_width=400)
        assert after.exit_code == 0 and "ffffffffffffffff" not in after.output and name in after.output
    finally:
        shutil.rmtree(copy)
