"""The Ray backend on a local 2-CPU cluster: the same records as the process pool, nothing lost to a dying
worker or a late cell, zoo builds whose artifacts come back to the driver."""

from __future__ import annotations

from pathlib import Path

import bench_fakes as bf
import pytest
import ray

import eis.zoo
from eis.errors import EisError
from eis.results import load
from eis.runner import run_benchmark
from eis.zoo import artifact

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster with 2 CPUs whose workers can import the test plugins (bench_fakes)."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(TESTS)}},
    )
    yield ray
    ray.shutdown()


def test_ray_records_equal_the_pool_and_survive_timeouts_and_dying_workers(cluster, tmp_path):
    cases = bf.make_cases(3)
    tools = ["fake-oracle", "fake-grad"]
    run_benchmark(cases, tools, ["fake-localize"], workers=2, store=tmp_path / "pool.sqlite")
    summary = run_benchmark(
        cases,
        [*tools, bf.Slow(delay=60.0), "fake-crash"],
        ["fake-localize"],
        workers=2,
        store=tmp_path / "ray.sqlite",
        budget_s=5.0,
        backend="ray",
    )
    pool, rays = (
        load(tmp_path / "pool.sqlite").set_index("key"),
        load(tmp_path / "ray.sqlite").set_index("key"),
    )
    assert summary.total == 12 and summary.failed == 4  # 2 cases apply (one is clean); slow + crash on each
    errors = rays[rays.status == "failed"].set_index("tool")["error"]
    assert set(errors["fake-slow"]) == {"timed out: the cell ran past its budget of 5 s"}
    assert all(e.startswith("the Ray worker died while running the cell") for e in errors["fake-crash"])
    common = pool.index.intersection(rays.index)
    assert len(common) == len(pool) == 8  # every cell the pool ran finished on Ray too, with equal records
    for col in ("status", "scores", "items", "extras", "flaw", "seed"):
        assert pool.loc[common, col].tolist() == rays.loc[common, col].tolist(), col
    # resumable: a second run finds everything that finished and retries only the failures when asked
    again = run_benchmark(
        cases, tools, ["fake-localize"], workers=2, store=tmp_path / "ray.sqlite", backend="ray"
    )
    assert again.ran == 0 and again.cached == 8


def test_smoke_localize_on_ray_equals_the_process_pool(cluster, smoke_cases, tmp_path):
    tools = ["saliency", "gradcam"]
    args = {"tools": tools, "tracks": ["localize"], "workers": 2}
    run_benchmark(smoke_cases, store=tmp_path / "pool.sqlite", **args)
    summary = run_benchmark(smoke_cases, store=tmp_path / "ray.sqlite", backend="ray", **args)
    pool, rays = (
        load(tmp_path / "pool.sqlite").set_index("key"),
        load(tmp_path / "ray.sqlite").set_index("key"),
    )
    assert summary.failed == 0 and summary.ran == len(pool) >= 4 * len(tools)
    assert sorted(pool.index) == sorted(rays.index)
    for col in ("status", "scores", "items", "flaw", "seed"):
        assert pool.loc[pool.index, col].tolist() == rays.loc[pool.index, col].tolist(), col


def test_zoo_build_on_ray_brings_the_artifacts_back(cluster, tmp_path, monkeypatch):
    suite = tmp_path / "tiny.toml"
    suite.write_text(
        '[defaults]\ndataset = "digits"\narch = "cnn"\ntrain = { epochs = 1 }\n'
        "bars = { clean_accuracy = 0.0, asr = 0.0 }\n"
        '[[case]]\nname = "ray-clean"\nflaw = { kind = "clean" }\n'
        '[[case]]\nname = "ray-patch"\nflaw = { kind = "patch", target = 1, pattern = "plus" }\n'
    )
    monkeypatch.setenv("EIS_HOME", str(tmp_path / "serial"))
    serial = eis.zoo.build_suite(str(suite), workers=0, device="cpu")
    monkeypatch.setenv("EIS_HOME", str(tmp_path / "ray"))
    on_ray = eis.zoo.build_suite(str(suite), device="cpu", backend="ray")
    assert [c.root.parent for c in on_ray] == [tmp_path / "ray" / "zoo"] * 2
    for a, b in zip(serial, on_ray, strict=True):
        assert (a.root / "model.safetensors").read_bytes() == (b.root / "model.safetensors").read_bytes()


def test_packed_artifacts_unpack_anywhere_and_corruption_is_refused(smoke, tmp_path, monkeypatch):
    case = smoke["digits-cnn-patch"]
    files = artifact.pack(case.root)
    monkeypatch.setenv("EIS_HOME", str(tmp_path / "elsewhere"))
    root = artifact.unpack(case.id, files)
    assert root == tmp_path / "elsewhere" / "zoo" / case.id
    assert eis.zoo.Case(root).truth().measured == case.truth().measured
    bad = dict(files, **{"model.safetensors": files["model.safetensors"][:-1] + b"\0"})
    with pytest.raises(artifact.CorruptArtifact, match="does not match its hash"):
        artifact.unpack("another-id", bad)
    assert not (tmp_path / "elsewhere" / "zoo" / "another-id").exists()


def test_unknown_backend_is_a_one_line_error(tmp_path):
    with pytest.raises(EisError, match="unknown backend 'spark'; valid: local, ray"):
        run_benchmark(
            bf.make_cases(1), ["fake-oracle"], ["fake-localize"], store=tmp_path / "s", backend="spark"
        )
