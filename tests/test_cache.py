"""The shared on-disk cache: atomic folders, verified tensors, recompute on corruption."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

from eis.cache import atomic_dir, cached_state


def test_cached_state_computes_once_then_loads(fresh_home) -> None:
    calls = []

    def compute():
        calls.append(1)
        return {"w": torch.arange(4.0)}, {"loss": 0.5, "when": object()}  # non-JSON notes become strings

    t1, notes, root = cached_state("things", {"a": 1}, compute)
    t2, notes2, root2 = cached_state("things", {"a": 1}, compute)
    assert len(calls) == 1 and root == root2 and root.parent == fresh_home / "things"
    assert torch.equal(t1["w"], t2["w"]) and notes2["loss"] == 0.5 and isinstance(notes2["when"], str)
    cached_state("things", {"a": 2}, compute)  # another key, another entry
    assert len(calls) == 2 and len(list((fresh_home / "things").iterdir())) == 2


def test_a_second_process_waits_for_the_entry_being_computed_instead_of_computing_it(fresh_home) -> None:
    computing, calls, got = threading.Event(), [], []

    def compute():
        calls.append(1)
        computing.set()
        time.sleep(0.5)  # the other caller arrives meanwhile
        return {"w": torch.ones(2)}, {}

    first = threading.Thread(target=lambda: got.append(cached_state("things", {"a": 1}, compute)))
    first.start()
    assert computing.wait(10)
    got.append(cached_state("things", {"a": 1}, compute))  # blocks on the entry's lock, then loads
    first.join()
    assert calls == [1] and all(torch.equal(t["w"], torch.ones(2)) for t, _, _ in got)


@pytest.mark.parametrize("damage", ["weights", "meta", "key"])
def test_a_corrupt_entry_is_recomputed_not_loaded(fresh_home, damage: str) -> None:
    def compute():
        return {"w": torch.ones(3)}, {}

    _, _, root = cached_state("things", {"a": 1}, compute)
    if damage == "weights":
        (root / "weights.safetensors").write_bytes(b"garbage")
    elif damage == "meta":
        (root / "meta.json").write_text("{not json")
    else:
        meta = json.loads((root / "meta.json").read_text())
        (root / "meta.json").write_text(json.dumps({**meta, "key": {"a": 99}}))
    fresh = []

    def again():
        fresh.append(1)
        return {"w": torch.full((3,), 2.0)}, {}

    tensors, _, _ = cached_state("things", {"a": 1}, again)
    assert fresh == [1] and torch.equal(tensors["w"], torch.full((3,), 2.0))
    assert cached_state("things", {"a": 1}, again)[0]["w"][0] == 2.0 and fresh == [1]  # rewritten intact


def test_atomic_dir_leaves_nothing_when_the_block_fails(tmp_path) -> None:
    final = tmp_path / "entry"
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("first")
    with atomic_dir(final) as tmp:  # someone finished first: their copy is kept
        (tmp / "a.txt").write_text("second")
    assert (final / "a.txt").read_text() == "first" and len(list(tmp_path.iterdir())) == 1
    with atomic_dir(final, replace=True) as tmp:
        (tmp / "a.txt").write_text("forced")
    assert (final / "a.txt").read_text() == "forced"
