"""Run directory: atomic parts, rejected rows by reason, manifest merge, and resume through run_stage."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pytest

from ded_ray import plan
from ded_ray import schema as S
from ded_ray.config import ConfigError, load_config
from ded_ray.rundir import RunDir, kept_rows, open_run, run_stage
from ded_ray.rundir.folders import part_name
from ded_ray.stages.base import mark_rejected

ROW_WISE, GROUPED = plan.ROLLOUT, plan.DIVERSITY


def _rows(ids):
    return pd.DataFrame({S.ROLLOUT_ID: ids, "value": [len(i) for i in ids]})


def _part(ids):
    return pa.Table.from_pandas(_rows(ids))


def test_parts_read_back_and_done_ids(tmp_path):
    run = RunDir(str(tmp_path), "r")
    stage = run.stage(ROW_WISE)
    assert stage.path.endswith(f"/r/{ROW_WISE.folder}") and not stage.is_complete()
    stage.write_part(_part(["a", "b"]))
    stage.write_part(_part(["c"]))
    assert stage.read().num_rows == 3 == stage.num_rows()
    assert stage.done_ids(S.ROLLOUT_ID) == {"a", "b", "c"}
    assert not list((tmp_path / "r" / ROW_WISE.folder).glob(".tmp-*"))


def test_a_part_named_by_its_ids_is_replaced_not_duplicated(tmp_path):
    stage = RunDir(str(tmp_path), "r").stage(ROW_WISE)
    for _ in range(2):  # a retried task writes the same rows again
        stage.write_part(_part(["a", "b"]), name=part_name(["a", "b"]))
    assert stage.read().num_rows == 2 and len(stage.parts()) == 1
    assert part_name(["a", "b"]) != part_name(["b", "a"]) != part_name(["ab"])


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


def test_manifest_and_json_artefacts(tmp_path):
    run = RunDir(str(tmp_path), "r")
    run.update_manifest(stages={"a": {"rows": 1}}, note="x")
    run.update_manifest(stages={"b": {"rows": 2}})
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["stages"] == {"a": {"rows": 1}, "b": {"rows": 2}} and manifest["note"] == "x"
    assert run.read_json("eval.json") == {}
    run.write_json("eval.json", {"base": {"score": 1}})
    assert run.read_json("eval.json") == {"base": {"score": 1}} and not list((tmp_path / "r").glob(".*.tmp"))


def test_run_stage_skips_complete_and_resumes_partial(tmp_path):
    run = RunDir(str(tmp_path), "r")
    all_ids = [f"p{i}" for i in range(10)]
    calls = []

    def build(done):
        calls.append(set(done))
        todo = [i for i in all_ids if i not in done]
        df = _rows(todo)
        return mark_rejected(df, df[S.ROLLOUT_ID] == "p3", "engine_error")

    # A run cut off after writing the first 4 rows: simulate by writing those parts by hand.
    run.stage(ROW_WISE).write_part(_part(all_ids[:4]))
    result = run_stage(run, ROW_WISE, build, part_rows=3)
    assert calls == [set(all_ids[:4])]  # only the missing rows were built
    assert sorted(result.table(kept_only=False)[S.ROLLOUT_ID].to_pylist()) == sorted(all_ids)
    assert result.kept == 10 and result.rows == 10  # p3 was already written before the cut, so it stays kept

    again = run_stage(run, ROW_WISE, build)
    assert len(calls) == 1 and again.rows == 10  # complete: not rebuilt
    stats = run.read_manifest()["stages"][ROW_WISE.name]
    assert stats["rows"] == 10 and stats["new_rows"] == 6


def test_run_stage_counts_rejections_and_redoes_a_grouped_stage_whole(tmp_path):
    run = RunDir(str(tmp_path), "r")
    run.stage(GROUPED).write_part(_part(["stale"]))  # a cut-off grouped stage: its parts are not reused

    def build(done):
        assert not done
        df = _rows(["x", "y", "z"])
        return mark_rejected(df, df[S.ROLLOUT_ID] != "x", "not_selected")

    result = run_stage(run, GROUPED, build)
    assert result.table()[S.ROLLOUT_ID].to_pylist() == ["x"] and (result.rows, result.kept) == (3, 1)
    assert run.rejected_counts() == {GROUPED.name: {"not_selected": 2}}
    assert run.read_manifest()["stages"][GROUPED.name]["rejected"] == {"not_selected": 2}


@pytest.mark.parametrize("small_stage_rows", [0, 4096])  # streamed from the parts / handed on from the driver
def test_a_ray_dataset_is_written_by_the_workers_and_read_back_lazily(tmp_path, ray_local, monkeypatch,
                                                                      small_stage_rows):
    import ray.data

    monkeypatch.setattr("ded_ray.rundir.runner.SMALL_STAGE_ROWS", small_stage_rows)

    run = RunDir(str(tmp_path), "r")
    frame = mark_rejected(_rows([f"q{i:02d}" for i in range(50)]), pd.Series([i % 5 == 0 for i in range(50)]), "wrong")
    ds = ray.data.from_pandas(frame).repartition(4)
    result = run_stage(run, ROW_WISE, lambda done: ds, part_rows=16)
    assert (result.rows, result.kept, result.rejected) == (50, 40, {"wrong": 10})
    assert len(run.stage(ROW_WISE).parts()) >= 4
    # the next stage reads the kept rows lazily, in blocks of the size asked for
    nxt = result.dataset(rows_per_block=8)
    assert isinstance(nxt, ray.data.Dataset) and nxt.count() == 40
    assert sorted(kept_rows(result.table(kept_only=False))[S.ROLLOUT_ID].to_pylist()) == sorted(
        r[S.ROLLOUT_ID] for r in nxt.take_all())
    # rejected copies sit beside the parts under the same names: one per part that had rejects
    copies = list((tmp_path / "r" / "rejected" / ROW_WISE.name / "wrong").glob("part-*.parquet"))
    assert {c.name for c in copies} <= {p.rsplit("/", 1)[-1] for p in run.stage(ROW_WISE).parts()}


def test_rejected_copies_of_a_part_never_finished_are_pruned(tmp_path):
    run = RunDir(str(tmp_path), "r")
    orphan = mark_rejected(_rows(["gone"]), pd.Series([True]), "wrong")
    run.write_rejected(ROW_WISE.name, orphan, part=part_name(["gone"]))  # crashed before its part was written
    result = run_stage(run, ROW_WISE, lambda done: mark_rejected(_rows(["a"]), pd.Series([True]), "wrong"))
    assert result.rejected == {"wrong": 1} and run.rejected_counts() == {ROW_WISE.name: {"wrong": 1}}


def test_cloud_style_uri_for_the_root(tmp_path):
    run = RunDir(f"file://{tmp_path}", "r")
    run.stage(ROW_WISE).write_part(_part(["a"]))
    assert (tmp_path / "r" / ROW_WISE.folder).is_dir()
    assert run.uri == f"file://{tmp_path}/r"
    assert run.sub("eval", "base", "arith").uri == f"file://{tmp_path}/r/eval/base/arith"


def test_duplicated_ids_are_a_loud_bookkeeping_error(tmp_path):
    run = RunDir(str(tmp_path), "r")
    stage = run.stage(ROW_WISE)
    stage.write_part(_part(["a", "b"]))
    stage.write_part(_part(["b"]))  # the same row under two part names: never written by run_stage
    with pytest.raises(RuntimeError, match="duplicated rollout_ids"):
        run_stage(run, ROW_WISE, lambda done: _rows([]))


@pytest.mark.parametrize("bad", ["", "   "])
def test_empty_stage_output_is_fine(tmp_path, bad):
    run = RunDir(str(tmp_path), "r" + str(len(bad)))
    result = run_stage(run, ROW_WISE, lambda done: _rows([]))
    assert result.rows == 0 and result.kept == 0


def test_a_run_of_another_layout_is_refused_with_what_to_do(tmp_path):
    config = load_config(None, [f"run.root={tmp_path}", "run.name=old"])
    run = open_run(config)
    run.update_manifest(layout=1)  # as written before the plan numbered its stages
    with pytest.raises(ConfigError, match=r"old.*another stage layout.*another `run.name=...`"):
        open_run(config)


def test_columns_some_parts_lack_read_as_nulls(tmp_path):
    run = RunDir(str(tmp_path), "r")
    stage = run.stage(ROW_WISE)
    stage.write_part(_part(["a"]))  # a batch without rejects: no reject_reason column at all
    stage.write_part(pa.Table.from_pandas(mark_rejected(_rows(["b"]), pd.Series([True]), "engine_error")))
    table = stage.read(columns=[S.ROLLOUT_ID, S.REJECT_REASON])
    assert table.column_names == [S.ROLLOUT_ID, S.REJECT_REASON]
    assert sorted(kept_rows(table)[S.ROLLOUT_ID].to_pylist()) == ["a"]
