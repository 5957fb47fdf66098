"""The generation columns every engine adds, with fixed dtypes.

An all-error batch must still give string/int/float columns (never null-typed ones), so every part file
of a run has the same schema; `set_generation_columns` is the one place that fixes those dtypes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from ded_ray import schema as S

GENERATION_COLUMNS = (S.RESPONSE, S.NUM_TOKENS, S.FINISH_REASON, S.TOKEN_ENTROPY, S.ERROR)

# Error reasons shared by the engines (the runner routes such rows to rejected/rollout/<reason>).
PROMPT_TOO_LONG = "prompt_too_long"
ENGINE_ERROR = "engine_error"
CONNECTION_ERROR = "connection_error"
TIMEOUT = "timeout"
BAD_RESPONSE = "bad_response"


def ok_row(response: str, num_tokens: int, finish_reason: str, token_entropy: float | None) -> dict[str, Any]:
    return {
        S.RESPONSE: response,
        S.NUM_TOKENS: int(num_tokens),
        S.FINISH_REASON: finish_reason,
        S.TOKEN_ENTROPY: token_entropy,
        S.ERROR: None,
    }


def error_row(reason: str) -> dict[str, Any]:
    """A failed row: no response, zero tokens, finish_reason "error", `error` = a short reason slug."""
    return {S.RESPONSE: None, S.NUM_TOKENS: 0, S.FINISH_REASON: "error", S.TOKEN_ENTROPY: None, S.ERROR: reason}


def set_generation_columns(batch: pd.DataFrame, results: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """A copy of `batch` with the generation columns from `results` (one dict per row, same order)."""
    if len(results) != len(batch):
        raise ValueError(f"{len(results)} results for a batch of {len(batch)} rows: an engine must return one per row")
    out = batch.copy()
    for column in GENERATION_COLUMNS:
        out[column] = [r[column] for r in results]
    for column in (S.RESPONSE, S.FINISH_REASON, S.ERROR):
        out[column] = out[column].astype("string")  # None stays missing (<NA>)
    out[S.NUM_TOKENS] = out[S.NUM_TOKENS].astype("int32")
    out[S.TOKEN_ENTROPY] = out[S.TOKEN_ENTROPY].astype("float64")
    return out
