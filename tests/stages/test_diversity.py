"""Diversity selection: hand-made cases, determinism, brute-force optimality, the stage, Ray groupby."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pandas as pd
import pytest
from rapidfuzz.distance import Levenshtein
from rapidfuzz.process import cdist

from ded_ray import schema as S
from ded_ray.config import DiversityConfig, load_config
from ded_ray.ray_helpers import actor_pool
from ded_ray.stages.diversity import (
    DiversityStage,
    drop_boxed_sentence,
    duplicate_of,
    farthest_first,
    median_ratios,
    pairwise_distances,
    reasoning_part,
    select_diverse,
    select_diverse_detailed,
    think_part,
    to_sequences,
    word_token_ids,
)

BASE = "first we add the two numbers then we check the sum and the answer is five"
NEAR = [BASE, BASE.replace("check", "verify"), BASE.replace("five", "5")]
FAR_B = "let me draw a diagram of the triangle with sides three four and hypotenuse"
FAR_C = "consider modular arithmetic mod seven every power cycles with period six"


def load_real_traces(shared_data, problems: int, max_chars: int = 3000) -> list[list[str]]:
    """The first `problems` questions' completions (10 seeds each), cut to `max_chars` to keep tests fast."""
    path = shared_data / "reasoning_traces_thought_anchors" / "traces_by_problem.jsonl"
    out = []
    with path.open() as fh:
        for line in itertools.islice(fh, problems):
            traces = json.loads(line)["traces"]
            out.append([t["completion"][:max_chars] for t in traces])
    return out


# --- hand-made cases ------------------------------------------------------------------------------------


@pytest.mark.parametrize("unit", ["token", "char"])
def test_picks_the_obviously_different_ones(unit):
    texts = [NEAR[0], NEAR[1], FAR_B, NEAR[2], FAR_C]
    chosen = select_diverse(texts, 3, unit=unit)
    assert len(chosen) == 3
    assert {2, 4} <= set(chosen)  # both outliers
    assert len({0, 1, 3} & set(chosen)) == 1  # and only one of the near-duplicates


def test_first_pair_is_the_most_distant():
    texts = ["a b c d", "a b c e", "w x y z", "a b x d"]
    dist = pairwise_distances(to_sequences(texts))
    i, j = select_diverse(texts, 2)
    assert dist[i, j] == dist.max()
    assert (i, j) == (0, 2)  # lowest (i, j) among the pairs at distance 1.0


def test_deterministic_and_ties_go_to_lowest_index():
    assert select_diverse(["same text"] * 5, 3) == [0, 1, 2]
    texts = [NEAR[0], FAR_B, NEAR[1], FAR_C, NEAR[2]]
    runs = {tuple(select_diverse(texts, 4)) for _ in range(5)}
    assert len(runs) == 1


def test_prefix_property_and_edge_cases():
    texts = [NEAR[0], FAR_B, NEAR[1], FAR_C, NEAR[2]]
    full = select_diverse(texts, 10)
    assert sorted(full) == list(range(5))  # k >= M: everyone, farthest-first
    for k in range(1, 6):
        assert select_diverse(texts, k) == full[:k]
    assert select_diverse([], 3) == []
    assert select_diverse(["only"], 3) == [0]
    assert select_diverse(texts, 0) == []
    with pytest.raises(ValueError, match="k must be"):
        farthest_first(np.zeros((2, 2)), -1)
    with pytest.raises(ValueError, match="unit"):
        select_diverse(texts, 2, unit="byte")


def test_think_part_and_compare_option():
    assert think_part("<think>abc</think>answer") == "abc"
    assert think_part("abc</think>answer") == "abc"  # prompt ended in <think>
    assert think_part("<think>unfinished") == "unfinished"
    assert think_part("no tags at all") == "no tags at all"
    # Same reasoning, very different endings: only the response view tells them apart.
    think = "<think>we add two and three to get five</think>"
    texts = [think + " five", think + " the final answer written out at length is the number five indeed",
             "<think>multiply then subtract carefully</think> five"]
    by_think = select_diverse_detailed(texts, 3, compare="think")
    by_response = select_diverse_detailed(texts, 3, compare="response")
    assert by_think.distances[0, 1] == 0.0
    assert by_response.distances[0, 1] > 0.3


def test_word_tokenizer_is_shared_and_deterministic():
    a, b = word_token_ids(["x + y = z", "y = x"])
    assert a == [0, 1, 2, 3, 4] and b == [2, 3, 0]
    assert word_token_ids(["x + y = z", "y = x"]) == [a, b]


def test_hugging_face_tokenizer_gives_token_id_sequences():
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    corpus = NEAR + [FAR_B, FAR_C]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, tokenizers.trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    seqs = to_sequences(corpus, "token", tokenizer=hf)
    assert all(isinstance(s, list) and all(isinstance(t, int) for t in s) for s in seqs)
    assert len(seqs[0]) == len(BASE.split())
    chosen = select_diverse(corpus, 3, tokenizer=hf)
    assert {3, 4} <= set(chosen)


# --- brute force: greedy max-min vs the best subset -----------------------------------------------------


def best_subset_min_distance(dist: np.ndarray, k: int) -> float:
    return max(
        min(dist[a, b] for a, b in itertools.combinations(subset, 2))
        for subset in itertools.combinations(range(len(dist)), k)
    )


def set_min_distance(dist: np.ndarray, chosen: list[int]) -> float:
    return min(dist[a, b] for a, b in itertools.combinations(chosen, 2))


def random_family(rng: random.Random, m: int) -> list[str]:
    """m 'trajectories': mutations of 1-3 base word sequences (like samples of one question)."""
    vocab = [f"w{i}" for i in range(40)]
    bases = [[rng.choice(vocab) for _ in range(rng.randint(20, 60))] for _ in range(rng.randint(1, 3))]
    out = []
    for _ in range(m):
        words = list(rng.choice(bases))
        for _ in range(rng.randint(0, 25)):
            op, pos = rng.random(), rng.randrange(len(words) + 1)
            if op < 0.4:
                words.insert(pos, rng.choice(vocab))
            elif op < 0.7 and pos < len(words):
                words[pos] = rng.choice(vocab)
            elif pos < len(words) and len(words) > 1:
                del words[pos]
        out.append(" ".join(words))
    return out


def compare_with_brute_force(cases: list[tuple[np.ndarray, int]]) -> tuple[int, int, float]:
    """(cases equal to the optimum, cases, worst greedy/optimum ratio); asserts the half-optimum bound."""
    equal, worst = 0, 1.0
    for dist, k in cases:
        greedy = set_min_distance(dist, farthest_first(dist, k))
        best = best_subset_min_distance(dist, k)
        assert greedy >= 0.5 * best - 1e-9, (greedy, best, k)
        equal += bool(np.isclose(greedy, best))
        if best > 0:
            worst = min(worst, greedy / best)
    return equal, len(cases), worst


def random_cases(seed: int, n: int, scorer) -> list[tuple[np.ndarray, int]]:
    rng = random.Random(seed)
    cases = []
    for _ in range(n):
        m = rng.randint(4, 10)
        seqs = word_token_ids(random_family(rng, m))
        dist = np.asarray(cdist(seqs, seqs, scorer=scorer, dtype=np.float64, workers=1))
        cases.append((dist, rng.randint(2, min(4, m))))
    return cases


def test_greedy_meets_half_optimum_with_a_true_metric(record_property):
    # Plain edit distance is a metric, where greedy max-min provably reaches >= 1/2 of the optimum.
    equal, n, worst = compare_with_brute_force(random_cases(0, 150, Levenshtein.distance))
    record_property("equal_to_optimum_metric", f"{equal}/{n}")
    print(f"\nraw edit distance: greedy == optimum in {equal}/{n} random cases, worst ratio {worst:.3f}")


def test_greedy_vs_optimum_on_normalised_distance(record_property):
    # Normalised distance (ours) breaks the triangle inequality ("ba","aba","ab": 1 > 1/3 + 1/3), so the
    # bound is not a theorem there: this checks it holds on question-like data and records how often
    # greedy is exactly optimal.
    equal, n, worst = compare_with_brute_force(random_cases(1, 150, Levenshtein.normalized_distance))
    record_property("equal_to_optimum_random", f"{equal}/{n}")
    print(f"\nnormalised, random families: greedy == optimum in {equal}/{n}, worst ratio {worst:.3f}")


def test_greedy_vs_optimum_on_real_traces(shared_data, record_property):
    cases = []
    for traces in load_real_traces(shared_data, problems=12):
        dist = pairwise_distances(to_sequences(traces, "token"), workers=1)
        cases += [(dist, k) for k in (2, 3, 4)]
    equal, n, worst = compare_with_brute_force(cases)
    record_property("equal_to_optimum_real", f"{equal}/{n}")
    print(f"\nnormalised, real traces (M=10): greedy == optimum in {equal}/{n}, worst ratio {worst:.3f}")


# --- the stage ------------------------------------------------------------------------------------------


def stage_frame() -> pd.DataFrame:
    rows = []
    texts = {"p1": [NEAR[0], FAR_B, NEAR[1], FAR_C, NEAR[2]], "p2": [NEAR[0], FAR_B]}
    for pid, responses in texts.items():
        for i, text in enumerate(responses):
            rows.append({S.PROBLEM_ID: pid, S.ROLLOUT_ID: f"{pid}#t#{i}", S.RESPONSE: text, S.VERDICT: "correct"})
    rows.append({S.PROBLEM_ID: "p1", S.ROLLOUT_ID: "p1#t#9", S.RESPONSE: "totally wrong", S.VERDICT: "wrong"})
    return pd.DataFrame(rows)


def test_stage_marks_not_selected_and_keeps_order():
    frame = stage_frame()
    out = DiversityStage(per_question=3)(frame)
    assert list(out[S.ROLLOUT_ID]) == list(frame[S.ROLLOUT_ID])
    p1 = out[out[S.PROBLEM_ID] == "p1"].set_index(S.ROLLOUT_ID)
    kept = p1[p1[S.REJECT_REASON].isna() & (p1[S.VERDICT] == "correct")]
    assert {"p1#t#1", "p1#t#3"} <= set(kept.index) and len(kept) == 3
    assert sorted(kept[S.DIVERSITY_RANK].tolist()) == [0, 1, 2]
    assert (kept[S.DIVERSITY_MIN_DISTANCE] > 0).all()
    unchosen = p1[p1[S.REJECT_REASON] == "not_selected"]
    assert len(unchosen) == 2 and unchosen[S.REJECT_DETAIL].str.contains("kept 3 of 5").all()
    # The wrong row is not a candidate and is left alone; p2 has only 2 correct rows: both kept.
    assert pd.isna(p1.loc["p1#t#9", S.REJECT_REASON]) and pd.isna(p1.loc["p1#t#9", S.DIVERSITY_RANK])
    p2 = out[out[S.PROBLEM_ID] == "p2"]
    assert p2[S.REJECT_REASON].isna().all() and sorted(p2[S.DIVERSITY_RANK]) == [0, 1]


def test_stage_skips_rows_rejected_earlier():
    frame = stage_frame()
    frame[S.REJECT_REASON] = None
    frame[S.REJECT_DETAIL] = None
    frame.loc[frame[S.ROLLOUT_ID] == "p1#t#1", [S.REJECT_REASON, S.REJECT_DETAIL]] = ["too_easy", "rate 1.0"]
    out = DiversityStage(per_question=2)(frame).set_index(S.ROLLOUT_ID)
    assert out.loc["p1#t#1", S.REJECT_REASON] == "too_easy"
    assert pd.isna(out.loc["p1#t#1", S.DIVERSITY_RANK])
    assert (out[S.REJECT_REASON] == "not_selected").sum() == 2  # p1: 4 candidates, 2 kept


def test_stage_names_missing_columns():
    with pytest.raises(Exception, match="diversity.*response"):
        DiversityStage()(pd.DataFrame({S.PROBLEM_ID: ["p"], S.VERDICT: ["correct"]}))


def test_stage_through_ray_groupby(ray_local):
    import ray

    frame = stage_frame()
    ds = ray.data.from_pandas(frame).repartition(3)
    out = (
        ds.groupby(S.PROBLEM_ID)
        .map_groups(DiversityStage, fn_constructor_kwargs={"per_question": 3}, batch_format="pandas",
                    compute=actor_pool(1))
        .to_pandas()
    )
    expected = DiversityStage(per_question=3)(frame)
    merge = out.set_index(S.ROLLOUT_ID).loc[expected[S.ROLLOUT_ID]]
    assert len(out) == len(frame)
    assert list(merge[S.REJECT_REASON].fillna("")) == list(expected[S.REJECT_REASON].fillna(""))
    assert np.allclose(merge[S.DIVERSITY_MIN_DISTANCE].astype(float).fillna(-1),
                       expected[S.DIVERSITY_MIN_DISTANCE].fillna(-1))


# --- the benchmark's reference implementations ------------------------------------------------------------


def test_bench_reference_dp_agrees_with_rapidfuzz():
    from ded_ray.bench.diversity import python_dp_distance, synthetic_question

    texts = synthetic_question(5, 40, seed=3)
    seqs = to_sequences(texts)
    fast = pairwise_distances(seqs, workers=1)
    slow = np.array([[python_dp_distance(a, b) for b in seqs] for a in seqs])
    assert np.allclose(fast, slow)
    assert 0.1 < fast[np.triu_indices(5, 1)].mean() < 0.9  # mutations of one base: related, not identical
    assert python_dp_distance("kitten", "sitting") == pytest.approx(3 / 7)


def test_selection_does_not_depend_on_row_order():
    """A resumed run reads a question's rows in another order: it must keep the same trajectories."""
    rows = pd.DataFrame({S.PROBLEM_ID: ["q"] * 4, S.ROLLOUT_ID: [f"q#t#{k}" for k in range(4)],
                         S.VERDICT: ["correct"] * 4,
                         S.RESPONSE: ["same answer", "same answer", "same answer", "same answer"]})
    kept = []
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]):
        out = DiversityStage(per_question=2, unit="char")(rows.iloc[order].reset_index(drop=True))
        kept.append(sorted(out[out[S.REJECT_REASON].isna()][S.ROLLOUT_ID]))
    assert kept[0] == kept[1] == kept[2]



# --- the options: compare="reasoning", dedupe, the length guard -----------------------------------------


def test_drop_boxed_sentence_is_exactly_the_last_boxed_sentence():
    assert drop_boxed_sentence("x = 5. So the answer is \\boxed{5}.") == "x = 5. "
    assert drop_boxed_sentence("x = 5!\tThus \\boxed{5}") == "x = 5!\t"
    # a decimal point is not a sentence end; the rest of the boxed line goes, later lines stay
    assert drop_boxed_sentence("Step 2.5 gives \\boxed{2.5} done\nnext") == "\nnext"
    assert drop_boxed_sentence("**Final Answer**\n\\[\n\\boxed{66}\n\\]") == "**Final Answer**\n\\[\n\n\\]"
    assert drop_boxed_sentence("a \\boxed{1}.\nb \\boxed{2}.") == "a \\boxed{1}.\n"  # only the last one
    assert drop_boxed_sentence("The answer is 5.") == "The answer is 5."  # no \boxed{: nothing stripped
    # think tags as compare="think", then the boxed sentence inside the think part
    assert reasoning_part("<think>work. So \\boxed{5}</think>Answer: \\boxed{5}.") == "work. "
    assert reasoning_part("work</think>The answer is \\boxed{5}.") == "work"
    code = "<think>loop</think>```python\nprint(5)  # \\boxed{5}\n```"
    assert reasoning_part(code, "code") == code  # code: the whole response, unchanged


def test_reasoning_compare_ignores_the_answer_sentence():
    a = "Add 2 and 3 to get 5.\nSo the answer is \\boxed{5}."
    b = "Add 2 and 3 to get 5.\nTherefore, written out in full, the final answer is $\\boxed{5}$"
    c = "Multiply 5 by 1 and check it twice.\nSo the answer is \\boxed{5}."
    by_reasoning = select_diverse_detailed([a, b, c], 3, compare="reasoning")
    assert by_reasoning.distances[0, 1] == 0.0 and by_reasoning.distances[0, 2] > 0.3
    assert select_diverse_detailed([a, b, c], 3, compare="response").distances[0, 1] > 0.3
    assert select_diverse([a, b, c], 2, compare="reasoning") == [0, 2]  # b is a copy of a's reasoning
    # code rows compare the whole response: the same two texts are apart again
    coded = select_diverse_detailed([a, b], 2, compare="reasoning", domains=["code", "code"])
    assert coded.distances[0, 1] > 0.3


def test_reasoning_compare_on_real_math_traces(shared_data):
    """Real R1-style traces (prompt ends in <think>): only the answer after </think> differs → distance 0."""
    path = shared_data / "reasoning_traces_thought_anchors" / "math_traces.jsonl"
    with path.open() as fh:
        traces = [t["completion"] for line in itertools.islice(fh, 3) for t in json.loads(line)["traces"]]
    for trace in traces:
        assert "</think>" in trace
        think = trace.split("</think>")[0]
        other = think + "</think>\nA different write-up.\n\nThe final answer is $\\boxed{42}$."
        for unit in ("token", "char"):
            assert select_diverse_detailed([trace, other], 2, unit=unit, compare="reasoning").distances[0, 1] == 0
            assert select_diverse_detailed([trace, other], 2, unit=unit, compare="response").distances[0, 1] > 0
    assert select_diverse_detailed(traces, 3, compare="reasoning").distances[0, 1] > 0.3  # distinct traces


def test_dedupe_collapses_copies():
    same, other = "we add the numbers and check the sum", "draw the triangle and use pythagoras"
    texts = [same, same, "we  add the numbers\nand check the sum", other]  # the third differs in whitespace
    assert duplicate_of(texts) == {1: 0, 2: 0}
    # P=2: the distinct one plus the first copy (plain greedy does the same: a copy is at distance 0)
    assert sorted(select_diverse_detailed(texts, 2, unit="char", dedupe=True).chosen) == [0, 3]
    # P=4: plain keeps the copies to fill P; with dedupe they are rejected `duplicate`
    assert sorted(select_diverse_detailed(texts, 4, unit="char").chosen) == [0, 1, 2, 3]
    deduped = select_diverse_detailed(texts, 4, unit="char", dedupe=True)
    assert sorted(deduped.chosen) == [0, 3] and deduped.reasons == {1: "duplicate", 2: "duplicate"}
    assert deduped.min_distance[0] == deduped.min_distance[1] > 0.5  # no 0 from a kept copy
    # dedupe runs on the compared text: same reasoning, different answer sentence → copies
    boxed = ["Add 2 and 3.\nSo \\boxed{5}.", "Add 2 and 3.\nHence $\\boxed{5}$", "Take 10 and halve it."]
    chosen = select_diverse_detailed(boxed, 3, compare="reasoning", dedupe=True)
    assert sorted(chosen.chosen) == [0, 2] and chosen.reasons == {1: "duplicate"}


def guard_texts() -> list[str]:
    """Four similar 8-word traces and one 40-word outlier (the farthest from all: plain greedy picks it)."""
    base = ["first", "we", "add", "the", "two", "numbers", "then", "check"]
    similar = [" ".join(base[:k] + [f"w{k}"] + base[k + 1:]) for k in range(4)]
    return similar + [" ".join(f"long{i}" for i in range(40))]


def test_length_guard_skips_an_outlier_when_enough_are_in_band():
    texts = guard_texts()
    assert median_ratios([8, 8, 8, 8, 40]).tolist() == [1, 1, 1, 1, 5]
    assert 4 in select_diverse(texts, 3)  # plain: the outlier is the far one
    guarded = select_diverse_detailed(texts, 3, length_band=2.0)
    assert 4 not in guarded.chosen and len(guarded.chosen) == 3
    assert guarded.reasons[4] == "outside_length_band"
    assert [r for i, r in guarded.reasons.items() if i != 4] == ["not_selected"]
    assert select_diverse_detailed(texts, 3, length_band=6.0).chosen == select_diverse(texts, 3)  # wide band


def test_length_guard_fills_from_outside_closest_to_the_median():
    texts = guard_texts()[:2] + [" ".join(f"mid{i}" for i in range(20))] + guard_texts()[4:]  # 8, 8, 20, 40
    ratios = median_ratios([8, 8, 20, 40])  # median 14: 1.75, 1.75, 1.43, 2.86
    assert (ratios <= 2.0).tolist() == [True, True, True, False]
    full = select_diverse_detailed(texts, 4, length_band=2.0)
    assert sorted(full.chosen) == [0, 1, 2, 3] and full.chosen[-1] == 3  # the guard never costs a trajectory
    band = 1.5  # only the 20-word one is in band; 8-word ones (1.75) fill before the 40-word one (2.86)
    filled = select_diverse_detailed(texts, 3, length_band=band)
    assert filled.chosen == [2, 0, 1] and filled.reasons == {3: "outside_length_band"}
    for k in range(1, 5):  # still a prefix order
        assert select_diverse_detailed(texts, k, length_band=band).chosen == select_diverse_detailed(
            texts, 4, length_band=band).chosen[:k]
    with pytest.raises(ValueError, match="length_band"):
        select_diverse_detailed(texts, 2, length_band=1.0)


def options_frame() -> pd.DataFrame:
    texts = guard_texts() + [guard_texts()[0]]  # q: 4 similar, 1 long outlier, 1 copy of the first
    rows = [{S.PROBLEM_ID: "q", S.ROLLOUT_ID: f"q#t#{i}", S.RESPONSE: t, S.VERDICT: "correct", S.DOMAIN: "math"}
            for i, t in enumerate(texts)]
    return pd.DataFrame(rows)


def test_stage_with_options_gives_every_unkept_row_a_reason():
    frame = options_frame()
    out = DiversityStage(per_question=3, dedupe=True, quality_guard=True)(frame).set_index(S.ROLLOUT_ID)
    kept = out[out[S.REJECT_REASON].isna()]
    assert len(kept) == 3 and "q#t#4" not in kept.index and "q#t#5" not in kept.index
    assert out.loc["q#t#5", S.REJECT_REASON] == "duplicate"
    assert out.loc["q#t#5", S.REJECT_DETAIL].endswith("same response text as q#t#0")
    assert out.loc["q#t#4", S.REJECT_REASON] == "outside_length_band"
    assert out.loc["q#t#4", S.REJECT_DETAIL].endswith("token length 40 vs median 8 (band 2)")
    assert out[S.REJECT_REASON].value_counts().to_dict() == {"duplicate": 1, "outside_length_band": 1,
                                                             "not_selected": 1}
    # diversity_min_distance: each kept row's min distance to the other kept rows
    dist = pairwise_distances(to_sequences(kept[S.RESPONSE].tolist()))
    np.fill_diagonal(dist, np.inf)
    assert np.allclose(kept[S.DIVERSITY_MIN_DISTANCE], dist.min(axis=1))
    # off by default: the plain criterion keeps the outlier and the copy is just not_selected
    plain = DiversityStage(per_question=3)(frame).set_index(S.ROLLOUT_ID)
    assert pd.isna(plain.loc["q#t#4", S.REJECT_REASON])
    assert set(plain[S.REJECT_REASON].dropna()) == {"not_selected"}


def test_stage_reads_the_domain_for_reasoning_compare():
    a = "Add 2 and 3 to get 5.\nSo the answer is \\boxed{5}."
    b = "Add 2 and 3 to get 5.\nTherefore, written out in full, the final answer is $\\boxed{5}$"
    frame = pd.DataFrame({S.PROBLEM_ID: ["m", "m", "c", "c"], S.ROLLOUT_ID: ["m1", "m2", "c1", "c2"],
                          S.RESPONSE: [a, b, a, b], S.VERDICT: ["correct"] * 4,
                          S.DOMAIN: ["math", "math", "code", "code"]})
    out = DiversityStage(per_question=2, compare="reasoning", dedupe=True)(frame).set_index(S.ROLLOUT_ID)
    assert out.loc["m2", S.REJECT_REASON] == "duplicate"  # same reasoning
    assert out.loc[["c1", "c2"], S.REJECT_REASON].isna().all()  # code: whole responses, which differ
    assert out.loc["c1", S.DIVERSITY_MIN_DISTANCE] > 0.3


def test_diversity_config_options_default_off_and_validate():
    cfg = DiversityConfig()
    assert (cfg.compare, cfg.dedupe, cfg.quality_guard, cfg.length_band) == ("response", False, False, 2.0)
    shipped = load_config("ded-32b").curate.diversity
    assert (shipped.compare, shipped.dedupe, shipped.quality_guard) == ("response", False, False)
    on = DiversityConfig(compare="reasoning", dedupe=True, quality_guard=True, length_band=3.0)
    stage = DiversityStage.from_config(on)
    assert (stage.compare, stage.dedupe, stage.length_band) == ("reasoning", True, 3.0)
    assert DiversityStage.from_config(cfg).length_band is None  # guard off
    for bad in ({"compare": "answer"}, {"length_band": 1.0}, {"length_band": 0.5}, {"dedupe": "maybe"},
                {"quality_guard": [1]}, {"band": 2.0}):
        with pytest.raises(ValueError):
            DiversityConfig(**bad)
    with pytest.raises(Exception, match="length_band"):
        DiversityStage(quality_guard=True, length_band=0.9)
    with pytest.raises(Exception, match="compare"):
        DiversityStage(compare="answer")
