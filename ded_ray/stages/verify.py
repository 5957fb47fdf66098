"""The verify stage: label every rollout with a verdict, a format flag and a length flag.

Reads rollout rows; writes `verdict`, `verdict_detail`, `extracted_answer`, `format_ok`, `length_ok`,
`verify_ms`. Dispatch by `domain` through `verifiers.registry`: a domain verified by `math` (math,
science) → `verify_math` against `answer` (in a pool of killable math-verify processes); by `code` →
`run_tests` in the sandbox with `json.loads(tests)` and the row's `meta` (its `time_limit_s` /
`memory_limit_mb` override the configured per-test limits; no `meta` column, or an empty one, leaves the
config's). A row whose rollout failed (`error` set) gets verdict `error` with that reason. Nothing is
dropped or rejected here: every row keeps its status, and the correctness stage turns labels into
rejections with reasons.

Used as `verify_rows(ds, cfg.verify, tokenizer)` (a pool of CPU actors over a Ray Dataset), or called
directly on a pandas DataFrame.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import pandas as pd

from ded_ray import schema as S
from ded_ray.config import VerifyConfig
from ded_ray.ray_helpers import on_actors
from ded_ray.stages.base import Stage, StageError
from ded_ray.verifiers.code import run_tests
from ded_ray.verifiers.format import format_ok, length_ok
from ded_ray.verifiers.math import MathVerifierPool, extract_answer
from ded_ray.verifiers.registry import DOMAINS, SPECS
from ded_ray.verifiers.sandbox import SandboxLimits
from ded_ray.verifiers.verdict import ERROR, UNPARSABLE, WRONG, Verdict


def _missing(value: Any) -> bool:
    """None, NaN or pd.NA (Arrow-backed columns give pd.NA for nulls)."""
    return value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value))


def verify_rows(ds, config: VerifyConfig, tokenizer: Any = None):
    """`ds` (a Ray Dataset of rollouts) with verdict columns, from an autoscaling pool of VerifyStage actors."""
    return on_actors(
        ds.map_batches, VerifyStage, config.concurrency,
        fn_constructor_kwargs={"config": config, "tokenizer": tokenizer},
        batch_format="pandas",
        batch_size=config.batch_size,
    )


class VerifyStage(Stage):
    """`config`: VerifyConfig (or its dict). `tokenizer`: the student's model (built-in name or folder) for
    `length_ok`; without one, `length_ok` uses the rollout's own `num_tokens` (the engine's count)."""

    name: ClassVar[str] = "verify"
    reads: ClassVar[tuple[str, ...]] = (S.DOMAIN, S.RESPONSE)
    writes: ClassVar[tuple[str, ...]] = (S.VERDICT, S.VERDICT_DETAIL, S.EXTRACTED_ANSWER, S.FORMAT_OK,
                                         S.LENGTH_OK, S.VERIFY_MS)

    def __init__(self, config: VerifyConfig | dict | None = None, tokenizer: Any = None) -> None:
        if config is None:
            config = VerifyConfig()
        elif isinstance(config, dict):
            config = VerifyConfig.model_validate(config)
        self.config = config
        self.pool = MathVerifierPool(workers=config.math_workers, timeout_s=config.math_timeout_s)
        self.limits = SandboxLimits(timeout_s=config.code_timeout_s, test_timeout_s=config.code_test_timeout_s,
                                    memory_mb=config.code_memory_mb, nproc=config.code_nproc)
        self.tokenizer = self._load_tokenizer(tokenizer)
        self.judge = None
        if config.judge_endpoint:
            from ded_ray.verifiers.judge import LLMJudge

            self.judge = LLMJudge(config.judge_endpoint, config.judge_model, config.judge_api_key_env)
        # One verifier per registry kind: rows -> {index: Verdict}.
        self.verifiers = {"math": self._verify_math, "code": self._verify_code}

    @staticmethod
    def _load_tokenizer(tokenizer: Any):
        if tokenizer is None or not isinstance(tokenizer, str):
            return tokenizer  # None, or an already-loaded tokenizer / callable
        from transformers import AutoTokenizer

        from ded_ray.models import resolve_model

        return AutoTokenizer.from_pretrained(str(resolve_model(tokenizer)))

    # --- per-domain checks -----------------------------------------------------------------------------

    def _verify_math(self, rows: pd.DataFrame) -> dict[Any, Verdict]:
        if rows.empty:
            return {}
        if S.ANSWER not in rows:
            raise StageError(f"stage {self.name!r}: math rows need the {S.ANSWER!r} column (the gold answer)")
        verdicts = self.pool.verify_many(list(zip(rows[S.RESPONSE], rows[S.ANSWER])))
        out = dict(zip(rows.index, verdicts))
        if self.judge is not None:
            for index, verdict in out.items():
                if verdict.status in (WRONG, UNPARSABLE):
                    row = rows.loc[index]
                    answer = verdict.extracted_answer or str(row[S.RESPONSE]).rpartition("</think>")[2]
                    judged = self.judge.judge(str(row.get(S.QUESTION, "")), answer, str(row[S.ANSWER]))
                    if judged is not None:
                        out[index] = Verdict(judged.status, f"{judged.detail} (math-verify: {verdict.status})",
                                             verdict.extracted_answer, verdict.elapsed_ms)
        return out

    def _verify_code_row(self, response: Any, tests: Any, meta: Any = None) -> Verdict:
        if _missing(tests) or (isinstance(tests, str) and not tests.strip()):
            return Verdict(ERROR, "code row has no tests")
        try:
            parsed = json.loads(tests) if isinstance(tests, str) else list(tests)
        except ValueError as exc:
            return Verdict(ERROR, f"tests column is not JSON: {exc}")
        return run_tests(response if isinstance(response, str) else "", parsed, self.config.code_timeout_s,
                         limits=self.limits, meta=None if _missing(meta) else meta,
                         all_tests=self.config.code_all_tests)

    def _verify_code(self, rows: pd.DataFrame) -> dict[Any, Verdict]:
        if rows.empty:
            return {}
        if S.TESTS not in rows:
            raise StageError(f"stage {self.name!r}: code rows need the {S.TESTS!r} column (JSON test list)")
        metas = rows[S.META] if S.META in rows else [None] * len(rows)
        jobs = list(zip(rows[S.RESPONSE], rows[S.TESTS], metas))
        with ThreadPoolExecutor(max_workers=self.config.code_workers) as threads:
            verdicts = list(threads.map(lambda job: self._verify_code_row(*job), jobs))
        return dict(zip(rows.index, verdicts))

    # --- flags -----------------------------------------------------------------------------------------

    def _length_ok(self, batch: pd.DataFrame) -> list:
        limit = self.config.max_tokens
        if self.tokenizer is not None:
            return [length_ok(r, limit, self.tokenizer) for r in batch[S.RESPONSE]]
        if S.NUM_TOKENS in batch:
            return [None if _missing(n) else int(n) <= limit for n in batch[S.NUM_TOKENS]]
        return [None] * len(batch)  # not checked

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        self.check_columns(batch)
        batch = batch.copy()
        verdicts: dict[Any, Verdict] = {}
        failed = pd.Series(False, index=batch.index)
        if S.ERROR in batch:
            failed = batch[S.ERROR].map(lambda e: not _missing(e) and str(e) != "")
            for index in batch.index[failed]:
                verdicts[index] = Verdict(ERROR, f"rollout failed: {batch.at[index, S.ERROR]}")
        todo = batch[~failed]
        kinds = todo[S.DOMAIN].astype(str).map(lambda d: SPECS[d].verifier if d in SPECS else None)
        for kind, verify in self.verifiers.items():
            verdicts.update(verify(todo[kinds.eq(kind)]))
        for index in todo.index[kinds.isna()]:
            verdicts[index] = Verdict(ERROR, f"unknown domain {batch.at[index, S.DOMAIN]!r}; expected one of "
                                      f"{DOMAINS}")
        ordered = [verdicts[i] for i in batch.index]
        batch[S.VERDICT] = [v.status for v in ordered]
        batch[S.VERDICT_DETAIL] = [v.detail for v in ordered]
        batch[S.EXTRACTED_ANSWER] = [v.extracted_answer for v in ordered]
        batch[S.FORMAT_OK] = [format_ok(r, self.config.require_think) for r in batch[S.RESPONSE]]
        batch[S.LENGTH_OK] = self._length_ok(batch)
        batch[S.VERIFY_MS] = [float(v.elapsed_ms) for v in ordered]
        return batch

    def __del__(self) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.close()


__all__ = ["VerifyStage", "extract_answer"]
