"""Run directory: atomic parts, rejected rows by reason, manifest merge, and resume through run_stage."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pytest

from ded_ray import schema as S
from ded_ray.rundir import RunDir
from ded_ray.runner import kept_rows, run_stage
from ded_ray.stages.base import mark_rejected


def _rows(ids):
    return pd.DataFrame({S.ROLLOUT_ID: ids, "value": [len(i) for i in ids]})


def test_parts_read_back_and_done_ids(tmp_path):
    run = RunDir(str(tmp_path), "r")
    stage = run.stage(3, "rollouts")
    assert stage.path.endswith("/r/03_rollouts") and not stage.is_complete()
    stage.write_part(pa.Table.from_pandas(_rows(["a", "b"])))
    stage.write_part(pa.Table.from_pandas(_rows(["c"])))
    assert stage.read().num_rows == 3
    assert stage.done_ids(S.ROLLOUT_ID) == {"a", "b", "c"}
    assert not list((tmp_path / "r" / "03_rollouts").glob(".tmp-*"))


def test_rejected_rows_land_by_reason_and_are_idempotent(tmp_path):
    run = RunDir(str(tmp_path), "r")
    df = _rows(["a", "b", "c", "d"])
    mark_rejected(df, df[S.ROLLOUT_ID].isin(["a", "b"]), "wrong")
    mark_rejected(df, df[S.ROLLOUT_ID].isin(["b", "c"]), "too_long", "over 512 tokens")
    for _ in range(2):
        counts = run.write_rejected("verify", df)
    assert counts == {"wrong": 2, "too_long": 1}  # b keeps its first reason
    assert run.rejected_counts() == {"verify": {"wrong": 2, "too_long": 1}}
    assert (tmp_path / "r" / "rejected" / "verify" / "too_long").is_dir()


def test_manifest_merges(tmp_path):
    run = RunDir(str(tmp_path), "r")
    run.update_manifest(stages={"a": {"rows": 1}}, note="x")
    run.update_manifest(stages={"b": {"rows": 2}})
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["stages"] == {"a": {"rows": 1}, "b": {"rows": 2}} and manifest["note"] == "x"


def test_run_stage_skips_complete_and_resumes_partial(tmp_path):
    run = RunDir(str(tmp_path), "r")
    all_ids = [f"p{i}" for i in range(10)]
    calls = []

    def build(done):
        calls.append(set(done))
        todo = [i for i in all_ids if i not in done]
        df = _rows(todo)
        return mark_rejected(df, df[S.ROLLOUT_ID] == "p3", "error", "engine_error")

    # A run cut off after writing the first 4 rows: simulate by writing those parts by hand.
    run.stage(2, "gen").write_part(pa.Table.from_pandas(_rows(all_ids[:4])))
    table = run_stage(run, 2, "gen", build, id_column=S.ROLLOUT_ID, part_rows=3)
    assert calls == [set(all_ids[:4])]  # only the missing rows were built
    assert sorted(table[S.ROLLOUT_ID].to_pylist()) == sorted(all_ids)
    assert kept_rows(table).num_rows == 10  # p3 was already written before the cut, so it stays kept

    again = run_stage(run, 2, "gen", build, id_column=S.ROLLOUT_ID)
    assert len(calls) == 1 and again.num_rows == 10  # complete: not rebuilt
    stats = run.read_manifest()["stages"]["gen"]
    assert stats["rows"] == 10 and stats["new_rows"] == 6


def test_run_stage_counts_rejections(tmp_path):
    run = RunDir(str(tmp_path), "r")

    def build(_done):
        df = _rows(["x", "y", "z"])
        return mark_rejected(df, df[S.ROLLOUT_ID] != "x", "not_selected")

    table = run_stage(run, 5, "diversity", build, id_column=None)
    assert kept_rows(table)[S.ROLLOUT_ID].to_pylist() == ["x"]
    assert run.rejected_counts() == {"diversity": {"not_selected": 2}}
    assert run.read_manifest()["stages"]["diversity"]["rejected"] == {"not_selected": 2}


def test_run_stage_with_a_ray_dataset(tmp_path, ray_local):
    import ray.data

    run = RunDir(str(tmp_path), "r")
    ds = ray.data.from_pandas(_rows([f"q{i}" for i in range(50)]))
    table = run_stage(run, 1, "x", lambda done: ds.filter(lambda r: r[S.ROLLOUT_ID] not in done),
                      id_column=S.ROLLOUT_ID, part_rows=16)
    assert table.num_rows == 50 and len(run.stage(1, "x").parts()) >= 4


def test_cloud_style_uri_for_the_root(tmp_path):
    run = RunDir(f"file://{tmp_path}", "r")
    run.stage(1, "a").write_part(pa.Table.from_pandas(_rows(["a"])))
    assert (tmp_path / "r" / "01_a").is_dir()
    assert run.uri == f"file://{tmp_path}/r"


def test_dedup_keeps_one_row_per_id(tmp_path):
    run = RunDir(str(tmp_path), "r")
    stage = run.stage(1, "a")
    stage.write_part(pa.Table.from_pandas(_rows(["a", "b"])))
    stage.write_part(pa.Table.from_pandas(_rows(["b"])))  # a crash between write and bookkeeping
    table = run_stage(run, 1, "a", lambda done: _rows([]), id_column=S.ROLLOUT_ID)
    assert sorted(table[S.ROLLOUT_ID].to_pylist()) == ["a", "b"]


@pytest.mark.parametrize("bad", ["", "   "])
def test_empty_stage_output_is_fine(tmp_path, bad):
    run = RunDir(str(tmp_path), "r" + str(len(bad)))
    table = run_stage(run, 1, "empty", lambda done: _rows([]), id_column=S.ROLLOUT_ID)
    assert table.num_rows == 0
