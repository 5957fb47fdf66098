"""`Verdict`: the typed result of every verifier (math, code, judge).

`status` is one of `correct`, `wrong`, `unparsable`, `timeout`, `error`. Only `correct` and `wrong` are
judgements; `unparsable` (no answer / program found, or an answer math-verify cannot read), `timeout` and
`error` mean "could not verify" and must never be read as "wrong".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ded_ray.schema import VERDICT_STATUSES

CORRECT, WRONG, UNPARSABLE, TIMEOUT, ERROR = VERDICT_STATUSES


@dataclass(frozen=True)
class Verdict:
    status: str  # correct | wrong | unparsable | timeout | error
    detail: str = ""  # why: the failing test, the exception, the isolation level, ...
    extracted_answer: str | None = None  # the final answer (math) or program (code) that was checked
    elapsed_ms: float = 0.0  # wall-clock time of the whole check, milliseconds

    def __post_init__(self) -> None:
        if self.status not in VERDICT_STATUSES:
            raise ValueError(f"Verdict.status must be one of {VERDICT_STATUSES}, got {self.status!r}")

    @property
    def is_correct(self) -> bool:
        return self.status == CORRECT

    def with_elapsed(self, elapsed_ms: float) -> "Verdict":
        return Verdict(self.status, self.detail, self.extracted_answer, elapsed_ms)

    def to_dict(self) -> dict:
        return asdict(self)
