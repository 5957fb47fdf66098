"""The curation steps composed as the pipeline composes them (plan → stages → run directory → funnel), on a
literal table and local Ray, with no model: every row is accounted for, and each Table 3 level names the
rows its closing stage kept."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from ded_ray import plan
from ded_ray import schema as S
from ded_ray.config import load_config
from ded_ray.io import read_problems
from ded_ray.pipeline import curate_corpus
from ded_ray.rundir import open_run, run_stage
from ded_ray.stages.correctness import reject_incorrect
from ded_ray.steps.ablate import ONE_PER_QUESTION, arm_rows

LOOP = "Let me recount the apples once more to be sure. " * 60  # 600 words going round in a circle


def _trajectories(heldout_question: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """4 questions x 4 samples. q0's sample 1 is wrong, q1's sample 2 loops, q2 is the student's easy
    question, q3 is a held-out eval question (contaminated)."""
    questions = ["What is 12 + 30?", "What is 21 * 2?", "What is 40 + 2?", heldout_question]  # 2-digit: not held out
    problems, rows = [], []
    for q, question in enumerate(questions):
        problems.append({S.PROBLEM_ID: f"q{q}", S.DOMAIN: "math", S.QUESTION: question, S.ANSWER: "42",
                         S.TESTS: "", S.SOURCE: "literal", S.META: "{}"})
        for k in range(4):
            response = ["Adding up: the answer is \\boxed{42}.", "So it is \\boxed{41}.",
                        "I add them, carry nothing, and get \\boxed{42}.",
                        "Step one: split the numbers. Step two: add tens, then units. \\boxed{42}"][k]
            if (q, k) == (1, 2):
                response = LOOP + "\\boxed{42}"
            rows.append({**problems[-1], S.TEACHER: "t", S.SAMPLE_IDX: k, S.SEED: k, S.ROLLOUT_ID: f"q{q}#t#{k}",
                         S.PROMPT: question, S.RESPONSE: response, S.NUM_TOKENS: len(response.split()),
                         S.VERDICT: "wrong" if (q, k) == (0, 1) else "correct", S.FORMAT_OK: True,
                         S.LENGTH_OK: True})
    return pd.DataFrame(problems), pd.DataFrame(rows)


@pytest.fixture(scope="module")
def curated(tmp_path_factory, ray_local):
    config = load_config(None, [f"run.root={tmp_path_factory.mktemp('runs')}", "run.name=steps", "curate.diversity.unit=char",
                                "curate.diversity.per_question=2", "curate.pass_rate.k=2"])
    heldout, _ = read_problems(config.eval.benchmarks[0].source)
    problems, teacher = _trajectories(heldout[S.QUESTION].iloc[0])
    student = pd.DataFrame({S.PROBLEM_ID: [f"q{q}" for q in range(4) for _ in range(2)],
                            S.ROLLOUT_ID: [f"q{q}#student#{k}" for q in range(4) for k in range(2)],
                            S.VERDICT: ["correct" if q == 2 else "wrong" for q in range(4) for _ in range(2)]})
    run = open_run(config)
    problems_stage = run_stage(run, plan.PROBLEMS, lambda _done: problems)
    # the student's pass-rate samples, as the engine would have written them
    run_stage(run, plan.STUDENT_ROLLOUT, lambda _done: student.drop(columns=[S.VERDICT]))
    run_stage(run, plan.STUDENT_VERIFY, lambda _done: student)
    run_stage(run, plan.ROLLOUT, lambda _done: teacher.drop(columns=[S.VERDICT, S.FORMAT_OK, S.LENGTH_OK]))
    verified = run_stage(run, plan.CORRECTNESS, lambda _done: reject_incorrect(teacher))
    config = config.model_copy(update={"curate": config.curate.model_copy(update={
        "pass_rate": config.curate.pass_rate.model_copy(update={"enabled": False})})})  # use the samples above
    return run, config, verified, problems_stage, teacher


def test_steps_compose_and_the_funnel_adds_up(curated):
    from ded_ray.steps import curate

    run, config, verified, problems, teacher = curated
    right = curate.quality_filters(run, config, verified)
    student = run_stage(run, plan.STUDENT_VERIFY, lambda _done: pytest.fail("complete: read back"))
    hard = curate.drop_easy_questions(run, config, right, student)
    diverse = curate.keep_diverse(run, config, hard)
    clean = curate.decontaminate(run, config, diverse)
    mixed = curate.mix(run, config, clean)
    corpus = pq.read_table(curate.write_corpus(run, config, mixed)).to_pandas()

    reasons = {stage.spec.name: stage.rejected for stage in (verified, right, hard, diverse, clean, mixed)}
    assert reasons == {
        plan.CORRECTNESS.name: {"wrong": 1},
        plan.QUALITY_FILTERS[-1].name: {"repetition": 1},
        plan.PASS_RATE.name: {"too_easy": 4},
        plan.DIVERSITY.name: {"not_selected": 4},  # q0 and q1 had 3 left, q3 4; P = 2
        plan.DECONTAMINATE.name: {"contaminated": 2},
        plan.MIX.name: {},
    }
    assert corpus.groupby(S.PROBLEM_ID).size().to_dict() == {"q0": 2, "q1": 2}
    assert not {"q0#t#1", "q1#t#2"} & set(corpus[S.ROLLOUT_ID])  # the wrong one, the loop
    assert all(m[-1]["content"] == r for m, r in zip(corpus[S.MESSAGES], teacher.set_index(S.ROLLOUT_ID).loc[
        corpus[S.ROLLOUT_ID], S.RESPONSE]))

    manifest = json.loads(open(run.file("manifest.json")).read())
    funnel = manifest["funnel"]
    assert funnel["total"] == len(teacher) == funnel["corpus"] + sum(r["rows"] for r in funnel["by_reason"])
    assert manifest["corpus"]["rows"] == len(corpus) == funnel["corpus"]
    # each Table 3 level is the kept rows of its closing stage: the rows `ded ablate` trains on, one per
    # question at +Right and +Right-Hard (the paper's convention)
    arms = arm_rows(run)
    for row in funnel["table3"]:
        expected = row["questions"] if row["level"] in ONE_PER_QUESTION else row["rows"]
        assert len(arms[row["level"]]) == expected, row["level"]
    assert [row["rows"] for row in funnel["table3"]] == [16, 14, 10, 6, 4]


def test_pipeline_curate_corpus_is_the_same_chain_and_resumes_it(curated, capsys):
    run, config, verified, problems, _ = curated  # the run the test above curated step by step, if it ran
    first = pq.read_table(curate_corpus(run, config, verified, problems)).to_pandas()
    capsys.readouterr()
    again = pq.read_table(curate_corpus(run, config, verified, problems)).to_pandas()
    assert sorted(again[S.ROLLOUT_ID]) == sorted(first[S.ROLLOUT_ID])
    err = capsys.readouterr().err
    after_correctness = [s for s in plan.CURATION if s.number > plan.CORRECTNESS.number]
    assert "rows/s" not in err and err.count("complete: reusing") == len(after_correctness)


def test_an_evaluation_question_left_in_the_corpus_fails_the_run(curated):
    """Handed the rows before decontamination (q3 is a held-out question), the corpus writer refuses them."""
    from ded_ray.errors import UserError
    from ded_ray.steps import curate

    run, config, *_ = curated
    diverse = run_stage(run, plan.DIVERSITY, lambda _done: pytest.fail("complete: read back"))
    with pytest.raises(UserError, match=r"1 corpus question\(s\) are evaluation items after decontamination"):
        curate.write_corpus(run, config, diverse)
