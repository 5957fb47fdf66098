"""The body of one math-verify worker process (see `MathVerifierPool` in math.py).

math-verify and sympy can run for minutes or exhaust memory on a pathological answer (`10^{10^{10}}`, a
50k-character expression), inside C code that `signal.alarm` cannot interrupt. So the checks run here, in a
separate process with math-verify's own timeouts switched off; the parent enforces the wall-clock limit by
killing this process and starting a fresh one. The address-space limit turns a runaway big-integer into a
MemoryError instead of swapping the shared machine.

Run as `python -m ded_ray.verifiers._math_worker [MEMORY_MB]`. Protocol: JSON lines. The worker first
writes `{"ready": true}`; then for each `[item_id, answer_latex, gold_latex]` line on stdin it writes
`[item_id, status, detail, elapsed_ms]` with status in correct | wrong | unparsable | error | memory, in the
order the items came, each as soon as it is done (so the parent may send a chunk of lines at once and still
know which item is in progress). EOF ends it. Anything math-verify or sympy prints goes to stderr, so the
reply channel stays clean.

Speed (where the time went, measured on MATH-500 answers): almost all of a check is latex2sympy's ANTLR
parse, and most of that is ANTLR's full-context (LL) prediction, which the generated Python parser redoes on
every tuple / interval / set (30-130 ms each) and never caches. So parsing here is two-stage, the standard
ANTLR recipe: SLL prediction with bail-out first, and the full LL parse only if SLL reports any error
(SLL succeeding gives the same tree; on MATH-500, AIME and the warm-up corpus below the sympy results are
identical to math-verify's own). Then: parsed answers are cached by their LaTeX (rollouts of one question
share a gold and often an answer), and ANTLR's DFA and sympy are warmed at start on the answer shapes of
`WARM_UP` (before `ready`, so no item pays for it).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
import warnings
from collections import OrderedDict

# Imported at module level so a forkserver that preloads this module pays for sympy once.
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

_EXTRACTION = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
_CACHE_ENTRIES = 4096  # parsed LaTeX kept per worker (LRU)
_CACHE_MAX_CHARS = 2000  # longer strings are parsed every time (rare, and big to keep)

# Answer shapes the parser and sympy learn at start: numbers, fractions, radicals, pi, complex numbers,
# polynomials, equations and inequalities, tuples, intervals and unions, sets, matrices, bases, degrees,
# percentages, units, text / multiple choice, functions. Generic forms, not any benchmark's answers.
WARM_UP = [
    "5", "-3", "0.5", "3.14", "-0.25", "1,000", "12{,}000", "\\frac{1}{2}", "-\\frac{3}{4}", "\\dfrac{5}{6}",
    "\\tfrac{2}{3}", "1/3", "\\frac{\\sqrt{3}}{2}", "\\frac{3\\sqrt{5}}{7}", "2\\sqrt{2}", "\\sqrt{8}", "\\sqrt[3]{2}",
    "3\\sqrt[4]{5}", "\\frac{1+\\sqrt{5}}{2}", "\\frac{7+3a}{10}", "\\frac{\\pi}{3}", "2\\pi", "\\pi^2",
    "\\frac{3 \\pi^2}{2}", "e^{2}", "3 + 4i", "-1 - 2i", "i", "\\infty", "-\\infty", "x = 3", "y = 3x - 1", "y = -5x",
    "x^2 + 2x + 1", "2x^2 - 3x + 1", "x^6 + x^4 + x^2 + 1", "x^3 - x^2 + x - 1", "(a+1)(b+3)", "(x-1)(x+2)",
    "3x - 2y + 5z = 7", "x \\le 3", "x \\geq -1", "x < 2", "-2 < x < 5", "(1, 2)", "(-3,4)", "(7,-1)", "(0, 5)",
    "(-\\sqrt{2}, \\sqrt{2})", "\\left( 2, \\frac{\\pi}{3} \\right)", "\\left( \\frac{1}{2}, -7 \\right)", "(4,11,-2)",
    "(2,-5,-3,17)", "[0, 1)", "[1, 2)", "(0, 1]", "[-3,4]", "x \\in [-1,5]", "(3,\\infty)", "(-\\infty, 1]",
    "(-\\infty, -2) \\cup (3, \\infty)", "(0,4) \\cup (4,16)", "\\left(\\frac{2}{7},\\frac{5}{3}\\right]",
    "\\left[ \\frac{\\pi}{6}, \\frac{2 \\pi}{3} \\right]", "[-1, 1]", "\\{1, 2\\}", "\\{2\\pm\\sqrt{3},-1\\}",
    "\\{-1, 0, 3\\}", "1, 2, 3", "-2, 5", "\\pm 3", "2 \\pm \\sqrt{3}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}",
    "\\begin{pmatrix} -1/2 \\\\ 1/4 \\\\ 3/2 \\end{pmatrix}", "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
    "\\begin{bmatrix} 0 & 1 \\\\ -1 & 0 \\end{bmatrix}", "1234_{6}", "37_8", "1011_2", "60^\\circ", "45^{\\circ}",
    "50\\%", "12.5\\%", "\\$18.90", "10\\text{ cm}", "5 \\text{ inches}", "\\text{(C)}", "\\text{B}", "C",
    "\\text{Monday}", "\\text{even}", "\\mathrm{(A)}", "\\textbf{(D)}", "\\sin x", "\\cos \\frac{\\pi}{6}",
    "\\tan^{-1}(2)", "\\log_2 8", "\\ln 2", "\\binom{5}{2}", "5!", "|x - 1|", "f(x) = 2x + 1", "f^{-1}(x)",
    "a^2 + b^2", "\\frac{a}{b}", "2^{10}", "10^{-3}", "3 \\cdot 5", "2 \\times 10^3", "\\frac{x+1}{x-1}",
    "\\sqrt{x^2 + 1}", "\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{6}-\\sqrt{2}}{4}", "-\\frac{\\sqrt{2}}{2}",
    "\\left| x \\right|", "\\dfrac{9}{64}", "x^{\\frac{1}{3}}", "\\sqrt{2}+\\sqrt{3}", "1+2i", "\\frac{-1}{2}", "0",
    "100", "2024", "(1, 2) \\text{ and } (3, 4)", "x=1 \\text{ or } x=2", "a=2, b=3", "p - q", "\\emptyset",
    "\\mathbb{R}", "\\frac{n(n+1)}{2}", "\\sum_{k=1}^{n} k", "\\lfloor x \\rfloor", "\\lceil 2.5 \\rceil",
]
# Equivalent pairs, so sympy's comparison paths (numbers, intervals, sets, tuples, matrices) warm up too.
WARM_UP_PAIRS = [("0.5", "\\frac{1}{2}"), ("[0,1)", "[0, 1)"), ("\\{2,1\\}", "\\{1, 2\\}"), ("x=3", "3"),
                 ("(2,\\pi/3)", "\\left( 2, \\frac{\\pi}{3} \\right)"), ("\\sqrt{8}", "2\\sqrt{2}"),
                 ("(1, 2)", "[1, 2)"), ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "(1, 2)"), ("50", "50\\%")]


def _two_stage_antlr() -> bool:
    """Make latex2sympy parse with SLL first and full LL only on an SLL error; False if it cannot be done."""
    try:
        from antlr4 import PredictionMode
        from antlr4.error.ErrorStrategy import BailErrorStrategy
        from latex2sympy2_extended import latex2sympy2
        converter = latex2sympy2._Latex2Sympy
    except (ImportError, AttributeError):
        return False
    create_parser = converter.create_parser
    if getattr(create_parser, "_two_stage", False):
        return True

    def two_stage_create_parser(self, latex_str):
        parser = create_parser(self, latex_str)
        full_math = parser.math

        def math():
            parser._interp.predictionMode = PredictionMode.SLL
            parser._errHandler = BailErrorStrategy()
            try:
                return full_math()
            except Exception:  # noqa: BLE001 - any SLL failure: redo it exactly as latex2sympy does
                return create_parser(self, latex_str).math()

        parser.math = math
        return parser

    two_stage_create_parser._two_stage = True
    converter.create_parser = two_stage_create_parser
    return True


def _quiet() -> None:
    # math-verify logs a warning per call when its timeouts are off: we enforce them in the parent.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


_parsed: OrderedDict[str, list] = OrderedDict()


def _parse(latex: str):
    cached = _parsed.get(latex)
    if cached is not None:
        _parsed.move_to_end(latex)
        return cached
    result = parse(f"\\boxed{{{latex}}}", extraction_config=_EXTRACTION, parsing_timeout=None)
    if len(latex) <= _CACHE_MAX_CHARS:
        _parsed[latex] = result
        if len(_parsed) > _CACHE_ENTRIES:
            _parsed.popitem(last=False)
    return result


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


def warm_up() -> None:
    """Parse the `WARM_UP` shapes and check the `WARM_UP_PAIRS`, then forget those parses."""
    for latex in WARM_UP:
        check(latex, latex)
    for answer, gold in WARM_UP_PAIRS:
        check(answer, gold)
    _parsed.clear()


def serve(memory_mb: int | None) -> None:
    _quiet()
    _two_stage_antlr()
    replies = os.fdopen(os.dup(1), "w", buffering=1)  # private copy of stdout for the protocol
    os.dup2(2, 1)  # stray prints from libraries now land on stderr
    if memory_mb:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # Warm ANTLR's prediction DFA, sympy's and latex2sympy's lazy imports and caches now, so no real item
    # is charged the first use (it would count against that item's wall-clock limit).
    warm_up()
    replies.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        item_id, answer, gold = json.loads(line)
        started = time.perf_counter()
        try:
            status, detail = check(answer, gold)
        except MemoryError:
            _parsed.clear()
            status, detail = "memory", f"address-space limit of {memory_mb} MiB exceeded"
        except Exception as exc:  # noqa: BLE001 - any sympy/latex2sympy failure is "could not verify"
            status, detail = "error", f"math-verify raised {type(exc).__name__}: {str(exc)[:200]}"
        elapsed_ms = (time.perf_counter() - started) * 1000
        replies.write(json.dumps([item_id, status, detail, round(elapsed_ms, 3)]) + "\n")


if __name__ == "__main__":
    serve(int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] != "0" else None)
