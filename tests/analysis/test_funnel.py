"""The whole curation chain on real traces, and the funnel that accounts for every row."""

from __future__ import annotations

import itertools
import json

import pandas as pd
import pytest

from ded_ray import plan
from ded_ray import schema as S
from ded_ray.analysis.funnel import build_funnel, format_table3, print_funnel, rows_for_funnel
from ded_ray.analysis.histograms import pairwise_distance_values, write_histograms
from ded_ray.stages.base import kept
from ded_ray.stages.correctness import reject_incorrect
from ded_ray.stages.decontaminate import DecontaminateStage
from ded_ray.stages.diversity import DiversityStage
from ded_ray.stages.mix import MixStage
from ded_ray.stages.pass_rate import PassRateStage, student_pass_rates

PROBLEMS = 10


@pytest.fixture(scope="module")
def teacher_rows(shared_data) -> pd.DataFrame:
    """10 puzzles × 10 real R1-Distill traces; 'correct' = finished with the requested 'DONE.'."""
    rows = []
    path = shared_data / "reasoning_traces_thought_anchors" / "traces_by_problem.jsonl"
    with path.open() as fh:
        for n, line in enumerate(itertools.islice(fh, PROBLEMS)):
            item = json.loads(line)
            for t in item["traces"]:
                completion = t["completion"][:4000]
                rows.append({
                    S.PROBLEM_ID: item["problem_id"], S.DOMAIN: "math" if n % 2 else "science",
                    S.QUESTION: item["question"], S.TEACHER: "r1-distill", S.SEED: t["seed"],
                    S.ROLLOUT_ID: f'{item["problem_id"]}#r1-distill#{t["seed"]}', S.RESPONSE: completion,
                    S.NUM_TOKENS: len(completion.split()),
                    S.VERDICT: "correct" if t["answer_part"].strip().endswith("DONE.") else "wrong",
                    S.FORMAT_OK: t["finished"], S.LENGTH_OK: True,
                })
    return pd.DataFrame(rows)


def curate(teacher: pd.DataFrame) -> pd.DataFrame:
    ids = sorted(teacher[S.PROBLEM_ID].unique())
    # Student: question i solved (i % 5) of 4 times.
    student = pd.DataFrame([{S.PROBLEM_ID: pid, S.VERDICT: "correct" if j < i % 5 else "wrong"}
                            for i, pid in enumerate(ids) for j in range(4)])
    evals = teacher.drop_duplicates(S.PROBLEM_ID).iloc[[3]][[S.PROBLEM_ID, S.QUESTION]].assign(**{S.SOURCE: "planted-eval"})
    rows = reject_incorrect(teacher)
    rows = PassRateStage(student_pass_rates(student, k=4), threshold=0.5)(rows)
    rows = DiversityStage(per_question=3)(rows)
    rows = DecontaminateStage(evals)(rows)
    return MixStage({"science": 5}, seed=0)(rows)


def test_funnel_adds_up_and_follows_table3(teacher_rows):
    rows = curate(teacher_rows)
    funnel = build_funnel(rows)
    print("\n" + format_table3(funnel))

    assert funnel.total == len(teacher_rows) and funnel.adds_up
    # Every input row is in the corpus or under exactly one reason.
    corpus_ids = set(kept(rows)[S.ROLLOUT_ID])
    rejected = rows[rows[S.REJECT_REASON].notna()]
    assert corpus_ids.isdisjoint(rejected[S.ROLLOUT_ID]) and rejected[S.ROLLOUT_ID].is_unique
    assert corpus_ids | set(rejected[S.ROLLOUT_ID]) == set(teacher_rows[S.ROLLOUT_ID])
    counts = {(r["stage"], r["reason"]): r["rows"] for r in funnel.by_reason}
    assert {r: n for (_, r), n in counts.items()} == rows[S.REJECT_REASON].value_counts().to_dict()
    stages = {r: stage for stage, r in counts}
    assert stages["too_easy"] == plan.PASS_RATE.name and stages["not_selected"] == plan.DIVERSITY.name
    assert stages["contaminated"] == plan.DECONTAMINATE.name and stages["over_quota"] == plan.MIX.name
    assert stages["wrong"] == plan.CORRECTNESS.name

    # Table 3: each level is a subset of the one before; the levels match the stages' own outcomes.
    for domain in ("math", "science"):
        levels = {r["level"]: r for r in funnel.table3 if r["domain"] == domain}
        assert list(plan.LEVELS) == list(levels)
        sizes = [levels[lvl]["rows"] for lvl in plan.LEVELS]
        assert sizes == sorted(sizes, reverse=True)
        in_domain = rows[rows[S.DOMAIN] == domain]
        not_right = in_domain[S.REJECT_REASON].isin(["wrong", "format", "unparsable", "too_long"])
        assert levels["right"]["rows"] == (~not_right).sum()
        assert levels["right-hard"]["rows"] == (~not_right & (in_domain[S.REJECT_REASON] != "too_easy")).sum()
        assert levels["corpus"]["rows"] == in_domain[S.REJECT_REASON].isna().sum()
        # Diversity keeps at most P=3 per question.
        assert levels["right-hard-diverse"]["rows"] <= 3 * levels["right-hard-diverse"]["questions"]

    data = json.loads(funnel.to_json())
    assert data["total"] == funnel.total and sum(sum(v.values()) for v in data["rejected"].values()) == funnel.rejected


def test_reject_stage_column_wins_and_unknown_reasons_count(teacher_rows):
    rows = curate(teacher_rows)
    corpus = kept(rows)
    rejected = rows[rows[S.REJECT_REASON].notna()]
    table = rows_for_funnel(corpus, {"curate": rejected.iloc[:5], "verify": rejected.iloc[5:]})
    funnel = build_funnel(table)
    assert funnel.adds_up and {r["stage"] for r in funnel.by_reason} == {"curate", "verify"}
    odd = pd.DataFrame({S.PROBLEM_ID: ["x", "y"], S.DOMAIN: ["math", "math"], S.REJECT_REASON: ["bad_row", None]})
    funnel = build_funnel(odd)
    assert funnel.by_reason == [{"stage": "other", "reason": "bad_row", "rows": 1, "questions": 1}]
    assert funnel.adds_up


def test_printing_and_histograms(teacher_rows, tmp_path):
    rows = curate(teacher_rows)
    funnel = build_funnel(rows)
    text = format_table3(funnel)
    assert all(level in text for level in plan.LEVELS) and "rows / questions" in text
    from rich.console import Console

    console = Console(record=True, width=120)
    print_funnel(funnel, console=console)
    assert "right-hard-diverse" in console.export_text()

    paths = write_histograms(rows, tmp_path, unit="token")
    for path in paths.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    distances = pairwise_distance_values(rows)
    assert len(distances) > 0 and ((distances >= 0) & (distances <= 1)).all()


def test_chain_through_ray_matches_plain_pandas(teacher_rows, ray_local):
    import ray

    ids = sorted(teacher_rows[S.PROBLEM_ID].unique())
    student = pd.DataFrame([{S.PROBLEM_ID: pid, S.VERDICT: "correct" if j < i % 5 else "wrong"}
                            for i, pid in enumerate(ids) for j in range(4)])
    evals = teacher_rows.drop_duplicates(S.PROBLEM_ID).iloc[[3]][[S.PROBLEM_ID, S.QUESTION]]
    # One actor per stage; 4 actor pools on a 2-CPU Ray would deadlock at the default 1 CPU each.
    common = {"batch_format": "pandas", "concurrency": 1, "num_cpus": 0.25}
    ds = (
        ray.data.from_pandas(teacher_rows).repartition(4)
        .map_batches(reject_incorrect, batch_format="pandas")
        .map_batches(PassRateStage, fn_constructor_kwargs={
            "pass_rates": student_pass_rates(student, k=4), "threshold": 0.5}, **common)
        .map_batches(DecontaminateStage, fn_constructor_kwargs={"eval_items": evals}, **common)
        .groupby(S.PROBLEM_ID)
        .map_groups(DiversityStage, fn_constructor_kwargs={"per_question": 3}, **common)
    )
    rows = MixStage({"science": 5}, seed=0)(ds.to_pandas())
    expected = curate(teacher_rows)
    got = rows.set_index(S.ROLLOUT_ID).loc[expected[S.ROLLOUT_ID]]
    # Decontamination ran before diversity here, so only the contaminated question's rows can differ.
    same = ~expected[S.PROBLEM_ID].eq(evals[S.PROBLEM_ID].iloc[0]).to_numpy()
    assert list(got[S.REJECT_REASON].fillna("-")[same]) == list(expected[S.REJECT_REASON].fillna("-")[same])
    funnel = build_funnel(rows)
    assert funnel.adds_up and funnel.total == len(teacher_rows)
