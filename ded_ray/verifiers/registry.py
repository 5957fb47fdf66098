"""The problem domains and how each one is verified: the one place the domain list lives.

A domain names the verifier that checks its rollouts (`math`: math-verify against the gold answer, in
killable worker processes; `code`: the problem's tests in the sandbox) and the problem column that verifier
needs (`answer` or `tests`). The config (`ProblemSource.domain`), the problem readers (io.py) and the verify
stage all look a domain up here; adding a domain that an existing verifier can check is one line below.

Nothing heavy is imported (no math-verify, no sandbox, not even schema.py's pyarrow), so config.py and
io.py import this module at no cost and without cycles; the verifiers themselves live in the stage that
runs them (`stages/verify.py`, one per `VerifierKind`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

VerifierKind = Literal["math", "code"]
VERIFIER_KINDS: tuple[str, ...] = ("math", "code")


@dataclass(frozen=True)
class DomainSpec:
    name: str
    verifier: VerifierKind  # which verifier checks this domain's rollouts
    # The problem column that verifier reads (schema.ANSWER / schema.TESTS; spelled out to keep pyarrow out):
    # a problem of this domain without it is rejected when it is read.
    needs: Literal["answer", "tests"]


SPECS: dict[str, DomainSpec] = {
    spec.name: spec
    for spec in (
        DomainSpec("math", verifier="math", needs="answer"),
        DomainSpec("code", verifier="code", needs="tests"),
        DomainSpec("science", verifier="math", needs="answer"),  # GPQA-style: a gold answer to match
    )
}
DOMAINS: tuple[str, ...] = tuple(SPECS)


def domain_spec(domain: Any) -> DomainSpec | None:
    """The spec of `domain`, or None when it is not a known domain (any value: a source row may hold anything)."""
    return SPECS.get(domain) if isinstance(domain, str) else None


def check_domain(domain: Any) -> str:
    """`domain` if it is a known domain, else ValueError naming the valid ones (for config validation)."""
    if domain_spec(domain) is None:
        raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")
    return domain
