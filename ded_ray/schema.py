"""Column names and pyarrow schemas of the tables that flow through the pipeline.

Every stage reads and writes flat, named columns; ids (`problem_id`, `rollout_id`) survive every stage so a
row can always be traced back to its problem and teacher. Use these constants instead of string literals.
"""

from __future__ import annotations

import pyarrow as pa

# --- problem -------------------------------------------------------------------------------------------
PROBLEM_ID = "problem_id"  # stable: given by the source, or derived from source + question text
DOMAIN = "domain"  # one of verifiers.registry.DOMAINS ("math" | "code" | "science")
QUESTION = "question"
ANSWER = "answer"  # gold answer (math/science); "" for code
TESTS = "tests"  # JSON string: list of test dicts (code); "" otherwise
SOURCE = "source"
META = "meta"  # JSON string with whatever else the source row carried

PROBLEM_SCHEMA = pa.schema(
    [
        (PROBLEM_ID, pa.string()),
        (DOMAIN, pa.string()),
        (QUESTION, pa.string()),
        (ANSWER, pa.string()),
        (TESTS, pa.string()),
        (SOURCE, pa.string()),
        (META, pa.string()),
    ]
)

# --- rollout = problem columns + these -----------------------------------------------------------------
TEACHER = "teacher"
SAMPLE_IDX = "sample_idx"
SEED = "seed"
ROLLOUT_ID = "rollout_id"  # f"{problem_id}#{teacher}#{sample_idx}"
PROMPT = "prompt"
RESPONSE = "response"
NUM_TOKENS = "num_tokens"
FINISH_REASON = "finish_reason"
TOKEN_ENTROPY = "token_entropy"  # mean per-token entropy in bits; null when the engine gave no logprobs
ERROR = "error"  # null when the row succeeded; otherwise a short reason

ROLLOUT_SCHEMA = pa.schema(
    list(PROBLEM_SCHEMA)
    + [
        (TEACHER, pa.string()),
        (SAMPLE_IDX, pa.int32()),
        (SEED, pa.int64()),
        (ROLLOUT_ID, pa.string()),
        (PROMPT, pa.string()),
        (RESPONSE, pa.string()),
        (NUM_TOKENS, pa.int32()),
        (FINISH_REASON, pa.string()),
        (TOKEN_ENTROPY, pa.float64()),
        (ERROR, pa.string()),
    ]
)

# --- verdict = rollout columns + these -----------------------------------------------------------------
VERDICT = "verdict"  # correct | wrong | unparsable | timeout | error
VERDICT_DETAIL = "verdict_detail"
EXTRACTED_ANSWER = "extracted_answer"
FORMAT_OK = "format_ok"
LENGTH_OK = "length_ok"
VERIFY_MS = "verify_ms"

VERDICT_STATUSES = ("correct", "wrong", "unparsable", "timeout", "error")

# --- curation ------------------------------------------------------------------------------------------
PASS_RATE = "pass_rate"  # student's correct / k on this question
DIVERSITY_MIN_DISTANCE = "diversity_min_distance"  # min normalised distance to the other kept rows
DIVERSITY_RANK = "diversity_rank"  # 0 = chosen first (farthest-first order)

# --- corpus row: chat messages + lineage ----------------------------------------------------------------
MESSAGES = "messages"  # list<struct<role, content>>: system? / user / assistant
SAMPLING = "sampling"  # JSON string of the sampling params the teacher used

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])

# The corpus repeats some problem and rollout columns on purpose: it is a file of its own, read by TRL or
# LLaMA-Factory without the run directory, so its schema lists every column it carries.
CORPUS_SCHEMA = pa.schema(
    [
        (MESSAGES, pa.list_(MESSAGE_TYPE)),
        (PROBLEM_ID, pa.string()),
        (ROLLOUT_ID, pa.string()),
        (DOMAIN, pa.string()),
        (SOURCE, pa.string()),
        (TEACHER, pa.string()),
        (SEED, pa.int64()),
        (SAMPLING, pa.string()),
        (VERDICT, pa.string()),
        (PASS_RATE, pa.float64()),
        (DIVERSITY_MIN_DISTANCE, pa.float64()),
        (NUM_TOKENS, pa.int32()),
    ]
)

# --- rejected rows: whatever columns the row had + these ------------------------------------------------
REJECT_STAGE = "reject_stage"
REJECT_REASON = "reject_reason"  # a short slug, also the folder name under rejected/<stage>/
REJECT_DETAIL = "reject_detail"  # human-readable detail (the offending value, the rate, ...)


def rollout_id(problem_id: str, teacher: str, sample_idx: int) -> str:
    return f"{problem_id}#{teacher}#{sample_idx}"


def empty_table(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()
