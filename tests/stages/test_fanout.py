"""Fan-out: one row per (problem, teacher, sample_idx), distinct stable seeds, resume by skip_ids."""

from __future__ import annotations

import pandas as pd
import pytest

from ded_ray import schema as S
from ded_ray.generated import generate_problems
from ded_ray.stages.fanout import fan_out, rollout_seed


@pytest.fixture
def problems() -> pd.DataFrame:
    return pd.DataFrame(generate_problems(["add_1digit", "mul_1digit"], 10, seed=0))


def test_one_row_per_problem_teacher_sample_with_unique_ids_and_seeds(problems):
    out = fan_out(problems, ["t1", "t2"], samples=3, base_seed=5)
    assert len(out) == 20 * 2 * 3
    assert out[S.ROLLOUT_ID].is_unique and out[S.SEED].is_unique
    assert set(out[S.TEACHER]) == {"t1", "t2"} and set(out[S.SAMPLE_IDX]) == {0, 1, 2}
    for row in out.itertuples():
        assert row.rollout_id == f"{row.problem_id}#{row.teacher}#{row.sample_idx}"
        assert 0 <= row.seed < 2**63
    # Every problem column survives.
    assert set(problems.columns) <= set(out.columns)
    assert out.groupby(S.PROBLEM_ID)[S.QUESTION].nunique().eq(1).all()


def test_seeds_are_stable_and_depend_only_on_base_seed_and_rollout_id(problems):
    full = fan_out(problems, ["t1", "t2"], samples=3, base_seed=5).set_index(S.ROLLOUT_ID)[S.SEED]
    again = fan_out(problems, ["t1", "t2"], samples=3, base_seed=5).set_index(S.ROLLOUT_ID)[S.SEED]
    subset = fan_out(problems.iloc[3:5], ["t2"], samples=2, base_seed=5).set_index(S.ROLLOUT_ID)[S.SEED]
    other = fan_out(problems, ["t1", "t2"], samples=3, base_seed=6).set_index(S.ROLLOUT_ID)[S.SEED]
    assert full.equals(again)
    assert (full.loc[subset.index] == subset).all()  # other rows do not change a row's seed
    assert (full != other.loc[full.index]).all()
    assert full.loc["gen-add_1digit-eaed856f#t1#0"] == rollout_seed(5, "gen-add_1digit-eaed856f#t1#0")


def test_skip_ids_leave_out_exactly_the_done_rows(problems):
    full = fan_out(problems, ["t1"], samples=4, base_seed=0)
    done = set(full[S.ROLLOUT_ID].iloc[::3])
    rest = fan_out(problems, ["t1"], samples=4, base_seed=0, skip_ids=done)
    assert set(rest[S.ROLLOUT_ID]) == set(full[S.ROLLOUT_ID]) - done
    assert len(rest) == len(full) - len(done)


def test_bad_arguments_are_named(problems):
    with pytest.raises(ValueError, match="samples"):
        fan_out(problems, ["t"], samples=0, base_seed=0)
    with pytest.raises(ValueError, match="'#'"):
        fan_out(problems, ["a#b"], samples=1, base_seed=0)
    with pytest.raises(ValueError, match="problem_id"):
        fan_out(problems.drop(columns=[S.PROBLEM_ID]), ["t"], samples=1, base_seed=0)


def test_ray_dataset_gives_the_same_rows_as_the_dataframe(problems, ray_local):
    import ray.data

    expected = fan_out(problems, ["t1", "t2"], samples=2, base_seed=1)
    done = set(expected[S.ROLLOUT_ID].iloc[:7])
    blocks = [problems.iloc[:7], problems.iloc[7:14], problems.iloc[14:]]  # several blocks, several tasks
    ds = fan_out(ray.data.from_pandas(blocks), ["t1", "t2"], samples=2, base_seed=1, skip_ids=done)
    got = ds.to_pandas()
    assert len(got) == len(expected) - 7
    merged = got.merge(expected, on=S.ROLLOUT_ID, suffixes=("", "_df"))
    assert len(merged) == len(got)
    assert (merged[S.SEED] == merged[f"{S.SEED}_df"]).all()
