"""The repetition filter on real R1-Distill traces: real loops are rejected, every other trace is kept.

Data: `shared/data/reasoning_traces_thought_anchors/` (SOURCES.md there): 2890 traces of 289 puzzles × 10
seeds plus 153 MATH traces, 3043 in all, 390 of them cut off at 4096 tokens.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ded_ray import schema as S
from ded_ray.config import RepetitionConfig
from ded_ray.stages.repetition import (
    REASON,
    REASONS,
    REPEATED_SHARE,
    RepetitionStage,
    repeat_mask,
    repeated_share,
)

TRACES = "reasoning_traces_thought_anchors"

# The real traces that ARE loops, all from traces_by_problem.jsonl and all cut at max_tokens. Each was read
# by eye. (problem_id, seed): what repeats, verbatim, until the end.
GENUINE_LOOPS = {
    ("problem_78", 0): "the shape sequence '◯, △, □,' for 1500 words",
    ("problem_78", 2): "the shape sequence '◯, △, □,' for 1500 words",
    ("problem_822", 5): "after </think>, the '**Final Answer:** ... Correct Approach:' block, ~2000 words",
    ("problem_845", 3): "the 'use the bulb to create a sort of pulley' paragraph",
    ("problem_579", 7): "'Maybe the answer is that the rule allows for any color, including red'",
    ("problem_579", 3): "a ~600-word cycle: 'I'm really stuck here. Let me try to think of it as a logic puzzle'",
    ("problem_514", 3): "'perhaps the problem is that the IDs are from 1 to 99, but the students are 35'",
    ("problem_51", 7): "'Let me try to think of the answer. Maybe ... the match. That's four.'",
    ("problem_51", 2): "'Maybe the answer is the match, candle, kerosene lamp, and the fireplace. That's four.'",
    ("problem_399", 8): "'so perhaps the intended answer is both D and E', ~1100 words",
    ("problem_881", 8): "'the answer is none, but since that's not an option, perhaps ... conclusion 2'",
    ("problem_812", 2): "'so perhaps the intended answer is A. Alternatively, perhaps the original analogy'",
    ("problem_639", 9): "'Wait, perhaps I'm miscounting the number of pairs' / 'the problem's statement is incorrect'",
    ("problem_587", 1): "'I think I'll have to stop here and say I don't know the answer'",
    ("problem_898", 5): "'Wait, perhaps I should look for the most direct conclusion ... (B)'",
    ("problem_845", 8): "'maybe the ladder can be used as a kind of trolley ... I'm really stuck here'",
}




@pytest.fixture(scope="module")
def traces(shared_data) -> pd.DataFrame:
    """Every real trace: `file`, `problem_id`, `seed`, `finished`, `response`."""
    data = shared_data
    rows = []
    for name in ("traces_by_problem.jsonl", "math_traces.jsonl"):
        with open(data / TRACES / name, encoding="utf-8") as f:
            for line in f:
                problem = json.loads(line)
                for t in problem["traces"]:
                    rows.append({"file": name, S.PROBLEM_ID: problem["problem_id"], "seed": t["seed"],
                                 "finished": t["finished"], S.RESPONSE: t["completion"]})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def stage() -> RepetitionStage:
    return RepetitionStage.from_config(RepetitionConfig())


@pytest.fixture(scope="module")
def judged(traces, stage) -> pd.DataFrame:
    return stage(traces)


def is_loop(df: pd.DataFrame) -> pd.Series:
    keys = zip(df["file"], df[S.PROBLEM_ID], df["seed"])
    return pd.Series([f == "traces_by_problem.jsonl" and (p, s) in GENUINE_LOOPS for f, p, s in keys], index=df.index)


def test_the_real_data_is_all_there(traces):
    assert len(traces) == 3043
    assert traces[S.RESPONSE].map(lambda t: isinstance(t, str) and len(t) > 0).all()


def test_exactly_the_genuine_loops_are_rejected(judged):
    rejected = judged[judged[S.REJECT_REASON].notna()]
    got = {(p, s) for p, s in zip(rejected[S.PROBLEM_ID], rejected["seed"])}
    assert got == set(GENUINE_LOOPS)
    assert (rejected["file"] == "traces_by_problem.jsonl").all()
    assert (rejected[S.REJECT_REASON] == REASON).all()


def test_the_default_threshold_has_a_margin_on_both_sides(judged, stage):
    # Measured: genuine loops have share >= 0.198 (problem_845/8); the highest kept trace has 0.135 (problem_51/8,
    # which circles over a paragraph three times but has not yet locked into a loop). Median of all: 0.
    loops = is_loop(judged)
    share = judged[REPEATED_SHARE]
    assert share[loops].min() > stage.max_share + 0.02
    assert share[~loops].max() < stage.max_share - 0.02
    assert share.median() == 0.0
    # Finished traces that repeat themselves and then answer stay well below the threshold.
    assert share[~loops & judged["finished"]].max() < 0.13


def test_repeat_mask_matches_a_plain_tuple_reference(traces):
    def reference(words, n):
        seen, out = set(), []
        for i in range(len(words) - n + 1):
            gram = tuple(words[i : i + n])
            out.append(gram in seen)
            seen.add(gram)
        return np.array(out, dtype=bool)

    for text in traces[S.RESPONSE].iloc[::300]:  # 11 traces, loops among them not required
        words = text.split()
        for n in (1, 5, 50):
            assert np.array_equal(repeat_mask(words, n), reference(words, n))
    words = traces.loc[is_loop(traces), S.RESPONSE].iloc[0].split()
    assert np.array_equal(repeat_mask(words, 50), reference(words, 50))


# --- synthetic loops built from real, kept traces ------------------------------------------------------------


def fill_to(prefix: str, unit: str, length: int) -> str:
    """`prefix` followed by `unit` repeated until the text is `length` characters long."""
    out = prefix
    while len(out) < length:
        out += unit
    return out


def sentence_loop(text: str) -> str:
    """The first 70% of a trace, then one of its sentences (>= 10 words) repeated up to the original length."""
    head = text[: int(len(text) * 0.7)]
    sentence = next(s for s in head.split(". ")[3:] if len(s.split()) >= 10)
    return fill_to(head + " ", sentence.strip() + ". ", len(text))


def phrase_loop(text: str) -> str:
    """The first 70% of a trace, then a short phrase repeated up to the original length."""
    return fill_to(text[: int(len(text) * 0.7)] + " ", "Wait, let me check that again. ", len(text))


def paragraph_loop(text: str) -> str:
    """The first 60% of a trace; the last 40% is one of its earlier paragraphs repeated."""
    head = text[: int(len(text) * 0.6)]
    paragraph = max(head.split("\n\n")[1:], key=len)
    return fill_to(head + "\n\n", paragraph.strip() + "\n\n", len(text))


@pytest.fixture(scope="module")
def seeds_of_loops(judged) -> pd.DataFrame:
    """25 real finished traces the filter keeps, of at least 1000 words, spread over the data."""
    ok = judged[judged[S.REJECT_REASON].isna() & judged["finished"]]
    ok = ok[ok[S.RESPONSE].str.split().str.len() >= 1000]
    return ok.iloc[:: max(1, len(ok) // 25)].head(25)[[S.PROBLEM_ID, "seed", S.RESPONSE]].reset_index(drop=True)


@pytest.mark.parametrize("make", [sentence_loop, phrase_loop, paragraph_loop])
def test_synthetic_loops_from_real_traces_are_rejected(seeds_of_loops, stage, make):
    assert len(seeds_of_loops) == 25
    looped = seeds_of_loops.assign(**{S.RESPONSE: seeds_of_loops[S.RESPONSE].map(make)})
    out = stage(looped)
    assert (out[S.REJECT_REASON] == REASON).all(), out.loc[out[S.REJECT_REASON].isna(), [S.PROBLEM_ID, "seed"]]
    # A loop over the last 30-40% of the text measures 0.20-0.40 (the first pass round the loop is new text).
    assert (out[REPEATED_SHARE] > stage.max_share).all()


def test_a_trace_that_is_only_a_loop_has_share_near_one():
    assert repeated_share("I am stuck. " * 2000, 50) > 0.99
    assert repeated_share(" ".join(f"w{i}" for i in range(3000)), 50) == 0.0


# --- stage behaviour -----------------------------------------------------------------------------------------

LOOP = "Some opening words before the loop starts here. " + "So the answer is still not clear to me, hmm. " * 100


def test_missing_empty_and_non_string_responses_are_kept_with_share_zero(stage):
    batch = pd.DataFrame({S.RESPONSE: [None, "", np.nan, 42, LOOP]})
    out = stage(batch)
    assert out[REPEATED_SHARE].tolist()[:4] == [0.0, 0.0, 0.0, 0.0]
    assert out[S.REJECT_REASON].tolist() == [None, None, None, None, REASON]
    assert out[REPEATED_SHARE].dtype == float


def test_short_texts_under_min_words_are_kept():
    short = "I will check this one more time to be sure. " * 18  # 180 words, nearly all repeats
    out = RepetitionStage(ngram=50, max_share=0.17, min_words=200)(pd.DataFrame({S.RESPONSE: [short]}))
    assert out[REPEATED_SHARE].iloc[0] > 0.5
    assert out[S.REJECT_REASON].isna().all()
    out = RepetitionStage(ngram=50, max_share=0.17, min_words=100)(pd.DataFrame({S.RESPONSE: [short]}))
    assert out[S.REJECT_REASON].tolist() == [REASON]


def test_already_rejected_rows_keep_their_reason(stage):
    batch = pd.DataFrame(
        {S.RESPONSE: [LOOP, LOOP], S.REJECT_REASON: ["too_easy", None], S.REJECT_DETAIL: ["pass rate 1.0", None]}
    )
    out = stage(batch)
    assert out[S.REJECT_REASON].tolist() == ["too_easy", REASON]
    assert out[S.REJECT_DETAIL].iloc[0] == "pass rate 1.0"
    assert out[REPEATED_SHARE].iloc[0] > 0.17  # measured anyway
    assert batch[S.REJECT_REASON].iloc[0] == "too_easy" and batch[S.REJECT_REASON].isna().iloc[1]  # input unchanged


def test_detail_names_share_threshold_and_the_looping_text(stage):
    out = stage(pd.DataFrame({S.RESPONSE: [LOOP]}, index=[7]))
    detail = out.loc[7, S.REJECT_DETAIL]
    share = out.loc[7, REPEATED_SHARE]
    assert f"{share:.3f}" in detail and "0.17" in detail
    assert "So the answer is still not clear" in detail or "not clear to me, hmm." in detail


def test_config_and_constructor():
    cfg = RepetitionConfig()
    assert cfg.enabled and (cfg.ngram, cfg.max_share, cfg.min_words) == (50, 0.17, 200)
    stage = RepetitionStage.from_config(SimpleNamespace(ngram=8, max_share=0.5, min_words=10))
    assert (stage.ngram, stage.max_share, stage.min_words) == (8, 0.5, 10)
    assert REASONS == (REASON,) == ("repetition",)
    assert RepetitionStage.name == "repetition" and RepetitionStage.reads == (S.RESPONSE,)
    with pytest.raises(ValueError):
        RepetitionConfig(max_share=1.5)
    with pytest.raises(ValueError):
        RepetitionConfig(ngram=0)
    from ded_ray.stages.base import StageError

    with pytest.raises(StageError):
        RepetitionStage(ngram=0)
    with pytest.raises(StageError):
        RepetitionStage(max_share=-0.1)
    with pytest.raises(StageError, match="response"):
        RepetitionStage()(pd.DataFrame({"question": ["q"]}))
