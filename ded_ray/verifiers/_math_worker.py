"""The body of one math-verify worker process (see `MathVerifierPool` in math.py).

math-verify and sympy can run for minutes or exhaust memory on a pathological answer (`10^{10^{10}}`, a
50k-character expression), inside C code that `signal.alarm` cannot interrupt. So the checks run here, in a
separate process with math-verify's own timeouts switched off; the parent enforces the wall-clock limit by
killing this process and starting a fresh one. The address-space limit turns a runaway big-integer into a
MemoryError instead of swapping the shared machine.

Run as `python -m ded_ray.verifiers._math_worker [MEMORY_MB]`. Protocol: JSON lines. The worker first
writes `{"ready": true}`; then for each `[item_id, answer_latex, gold_latex]` line on stdin it writes
`[item_id, status, detail]` with status in correct | wrong | unparsable | error | memory. EOF ends it.
Anything math-verify or sympy prints goes to stderr, so the reply channel stays clean.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import warnings

# Imported at module level so a forkserver that preloads this module pays for sympy once.
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

_EXTRACTION = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]


def _quiet() -> None:
    # math-verify logs a warning per call when its timeouts are off: we enforce them in the parent.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def _parse(latex: str):
    return parse(f"\\boxed{{{latex}}}", extraction_config=_EXTRACTION, parsing_timeout=None)


def _squash(text: str) -> str:
    """Cheap textual normal form for the case math-verify cannot parse one side."""
    return "".join(text.replace("$", "").replace("\\!", "").replace("\\,", "").split()).lower()


def check(answer: str, gold: str) -> tuple[str, str]:
    """Compare one extracted answer with one gold answer (both LaTeX without `$`)."""
    gold_parsed = _parse(gold)
    answer_parsed = _parse(answer)
    if not gold_parsed:
        if _squash(answer) == _squash(gold):
            return "correct", "math-verify could not parse the gold answer; equal as text"
        return "error", f"math-verify could not parse the gold answer {gold[:200]!r}; fix the gold answer"
    if not answer_parsed:
        if _squash(answer) == _squash(gold):
            return "correct", "math-verify could not parse the answer; equal as text"
        return "unparsable", "math-verify could not parse the extracted answer"
    if verify(gold_parsed, answer_parsed, timeout_seconds=None):
        return "correct", "math-verify: equivalent"
    return "wrong", f"math-verify: not equivalent (answer {str(answer_parsed[-1])[:100]!r})"


def serve(memory_mb: int | None) -> None:
    _quiet()
    replies = os.fdopen(os.dup(1), "w", buffering=1)  # private copy of stdout for the protocol
    os.dup2(2, 1)  # stray prints from libraries now land on stderr
    if memory_mb:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # Warm sympy's and latex2sympy's lazy imports and caches now, so the first real item is not charged
    # the ~0.3 s of first use (it would count against that item's wall-clock limit).
    check("\\frac{1}{2}", "0.5")
    check("(1, 2)", "[1, 2)")
    replies.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        item_id, answer, gold = json.loads(line)
        try:
            status, detail = check(answer, gold)
        except MemoryError:
            status, detail = "memory", f"address-space limit of {memory_mb} MiB exceeded"
        except Exception as exc:  # noqa: BLE001 - any sympy/latex2sympy failure is "could not verify"
            status, detail = "error", f"math-verify raised {type(exc).__name__}: {str(exc)[:200]}"
        replies.write(json.dumps([item_id, status, detail]) + "\n")


if __name__ == "__main__":
    serve(int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] != "0" else None)
