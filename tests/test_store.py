"""The results store: round trips, upserts, refusal of foreign and newer files, concurrent writers."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from eis.errors import EisError
from eis.results import EXPORT_FORMATS, export, load
from eis.results.store import SCHEMA_VERSION, Store, encode_png, open_store, to_jsonable


def record(key: str, **kw) -> dict:
    rec = {
        "key": key,
        "case_id": "c1",
        "case_name": "case-1",
        "dataset": "digits",
        "arch": "cnn",
        "flaw": "patch",
        "tool": "saliency",
        "family": "attribution",
        "control": False,
        "settings": {"abs": True},
        "track": "localize",
        "track_version": "1",
        "status": "ok",
        "error": "",
        "runtime_s": 0.5,
        "peak_mem_mb": 300.0,
        "seed": 7,
        "versions": {"torch": "2.13.0"},
        "scores": {"iou": 0.25, "hit": 1.0},
        "items": {"iou": [0.0, 0.5]},
        "extras": {"target": 3},
    }
    rec.update(kw)
    return rec


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip_and_dataframe(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with Store(path) as st:
        st.put(record("k1"), {"input": encode_png(np.full((3, 4, 5), 0.5))})
        st.put(record("k2", tool="edge", control=True, status="failed", error="RuntimeError: x", scores={}))
        assert st.count() == 2 and st.keys(status="ok") == {"k1"}
        assert st.has("k2") and not st.has("k2", ok_only=True)
        assert st.integrity_check() == "ok" and st.schema_version() == SCHEMA_VERSION
        png = st.gallery(["k1", "k2"])
    assert set(png) == {"k1"}
    img = np.asarray(Image.open(io.BytesIO(png["k1"]["input"])))
    assert img.shape == (4, 5, 3) and (img == 128).all()
    df = load(path)
    expected = {"case_id", "case_name", "dataset", "arch", "flaw", "tool", "family", "control", "track"}
    assert expected | {"status", "error", "runtime_s", "peak_mem_mb", "scores", "items", "extras"} <= set(
        df.columns
    )
    row = df.set_index("key").loc["k1"]
    assert row["scores"] == {"iou": 0.25, "hit": 1.0} and row["items"] == {"iou": [0.0, 0.5]}
    assert row["settings"] == {"abs": True} and not row["control"]
    assert df.set_index("key").loc["k2", "control"]
    assert df.set_index("key").loc["k2", "error"] == "RuntimeError: x"


def test_upsert_replaces_a_cell_and_its_gallery(tmp_path: Path) -> None:
    with Store(tmp_path / "r.sqlite") as st:
        st.put(record("k1"), {"a": encode_png(np.zeros((2, 2))), "b": encode_png(np.ones((2, 2)))})
        st.put(record("k1", scores={"iou": 0.75}), {"c": encode_png(np.ones((2, 2)))})
        assert st.count() == 1
        assert st.records()[0]["scores"] == {"iou": 0.75}
        assert list(st.gallery(["k1"])["k1"]) == ["c"]


def test_wal_mode_and_default_path_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EIS_STORE", str(tmp_path / "env.sqlite"))
    with open_store() as st:
        assert st.path == tmp_path / "env.sqlite"
    con = sqlite3.connect(tmp_path / "env.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_text_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_text("my precious notes\n" * 10)
    before = digest(path)
    with pytest.raises(EisError, match="not an eis results store"):
        Store(path)
    with pytest.raises(EisError, match="not an eis results store"):
        load(path)
    assert digest(path) == before


def test_foreign_sqlite_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE cells (x)")
    con.execute("INSERT INTO cells VALUES (1)")
    con.commit()
    con.close()
    before = digest(path)
    with pytest.raises(EisError, match="SQLite file but not an eis results store"):
        Store(path)
    assert digest(path) == before
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL
    con.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    Store(path).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    with pytest.raises(EisError, match=rf"schema version {SCHEMA_VERSION + 1}, newer than this eis"):
        Store(path)


def test_load_missing_store_does_not_create_it(tmp_path: Path) -> None:
    with pytest.raises(EisError, match="no results store"):
        load(tmp_path / "absent.sqlite")
    assert not (tmp_path / "absent.sqlite").exists()


def test_to_jsonable_and_png_encoding() -> None:
    raw = {"a": np.float32(0.5), "b": [float("nan"), np.int64(3)], 4: (np.inf,), "c": np.arange(2)}
    out = to_jsonable(raw)
    assert out == {"a": 0.5, "b": [None, 3], "4": [None], "c": [0, 1]}
    json.dumps(out, allow_nan=False)
    gray = np.asarray(Image.open(io.BytesIO(encode_png(np.array([[0.0, 1.0], [2.0, -1.0]])))))
    assert gray.tolist() == [[0, 255], [255, 0]]  # clipped to [0, 1]
    rgb = np.asarray(Image.open(io.BytesIO(encode_png(np.zeros((1, 3, 3)) + 0.2))))
    assert rgb.shape == (3, 3) and (rgb == 51).all()


def _writer(path: str, start: int, n: int) -> None:
    with Store(path) as st:
        for i in range(start, start + n):
            st.put(record(f"k{i:04d}", seed=i), {"m": encode_png(np.zeros((2, 2)))})


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), s, 150)) for s in (0, 100)]  # 50 keys overlap
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    with Store(path) as st:
        assert st.count() == 250 and st.integrity_check() == "ok"
        assert {r["key"]: r["seed"] for r in st.records()} == {f"k{i:04d}": i for i in range(250)}


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_export(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "r.sqlite"
    with Store(path) as st:
        st.put(record("k1"))
        st.put(record("k2", scores={"iou": 0.5}))
    out = export(load(path), fmt, tmp_path / f"out.{fmt}")
    back = {"csv": pd.read_csv, "json": pd.read_json, "parquet": pd.read_parquet}[fmt](out)
    assert sorted(back["key"]) == ["k1", "k2"]
    if fmt == "json":
        assert back.set_index("key").loc["k1", "scores"] == {"hit": 1.0, "iou": 0.25}
    else:
        assert back.set_index("key")["score.iou"].to_dict() == {"k1": 0.25, "k2": 0.5}
        assert np.isnan(back.set_index("key").loc["k2", "score.hit"])
    with pytest.raises(EisError, match="valid: csv, json, parquet"):
        export(load(path), "xlsx", tmp_path / "x")
