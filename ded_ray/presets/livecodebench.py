"""LiveCodeBench release rows (HF `livecodebench/code_generation_lite`, any `release_v*`), decoded as its loader does.

Decoding copies `lcb_runner/benchmarks/code_generation.py` (`CodeGenerationProblem.__post_init__`):
`public_test_cases` is JSON text of [{input, output, testtype}]; `private_test_cases` is JSON text or, in the
newer releases, base64 → zlib → pickle of that JSON text; `metadata` is JSON text whose `func_name` names the
function that functional tests call; `platform` and `difficulty` must be among LCB's enum values and
`contest_date` is ISO text. LCB grades on public + private tests, so the problem's tests are both.

One departure, on purpose: LCB calls `pickle.loads` on the row, so a crafted row runs code on whoever loads it.
`_PlainUnpickler` resolves no class or function at all: it yields only what pickle builds without one (str,
bytes, numbers, None, bool, list, tuple, dict, set), and the result must be the JSON text a real row holds.
The decompressed size is capped too (a zip bomb is a row to reject, not a reason to fall over).

Meta: `question_title`, `platform`, `contest_id`, `contest_date` (ISO text: date windows compare it),
`difficulty` (evaluation splits), `starter_code` (the prompt shows it), `func_name` (functional problems), and
`num_public_tests` / `num_private_tests`.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import pickle
import zlib
from datetime import datetime
from typing import Any

from ded_ray.presets.base import Preset, PresetReject, require, text

NAME = "livecodebench"
BAD_PRIVATE_TESTS = "bad_private_tests"
FIELDS = ("question_title", "question_content", "platform", "question_id", "contest_id", "contest_date",
          "starter_code", "difficulty", "public_test_cases", "private_test_cases", "metadata")
PLATFORMS = ("leetcode", "codeforces", "atcoder")  # lcb_runner's Platform enum
DIFFICULTIES = ("easy", "medium", "hard")  # lcb_runner's Difficulty enum
TEST_TYPES = ("stdin", "functional")  # lcb_runner's TestType enum
MAX_PRIVATE_BYTES = 512 * 2**20  # decompressed; the largest real rows hold tens of MB


class _PlainUnpickler(pickle.Unpickler):
    """An unpickler that resolves no global, so no pickle can call anything (`os.system`, `eval`, ...)."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"the pickle names {module}.{name}; only plain values are allowed")


def plain_unpickle(data: bytes) -> Any:
    """`pickle.loads` limited to plain containers, strings and numbers; raises UnpicklingError otherwise."""
    return _PlainUnpickler(io.BytesIO(data)).load()


def decode_private(value: Any) -> list:
    """The private tests of a release row: JSON text, or base64 → zlib → (plain) pickle → JSON text."""
    if not isinstance(value, str):
        raise PresetReject(BAD_PRIVATE_TESTS, f"private_test_cases must be text, got {type(value).__name__}")
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        pass
    try:
        packed = base64.b64decode(value.encode("utf-8"))
        inflate = zlib.decompressobj()
        raw = inflate.decompress(packed, MAX_PRIVATE_BYTES)
        if inflate.unconsumed_tail:
            raise PresetReject(BAD_PRIVATE_TESTS, f"private_test_cases inflate past {MAX_PRIVATE_BYTES} bytes")
        decoded = plain_unpickle(raw)
        if not isinstance(decoded, (str, bytes)):  # LCB json.loads it; a container could repeat one object 1e8 times
            raise PresetReject(BAD_PRIVATE_TESTS, f"private_test_cases unpickle to {type(decoded).__name__}, "
                               "not JSON text")
        return json.loads(decoded)
    except PresetReject:
        raise
    except (binascii.Error, zlib.error, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise PresetReject(BAD_PRIVATE_TESTS, f"private_test_cases are neither JSON nor base64/zlib/pickle "
                           f"of JSON: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - pickle raises many kinds on crafted input; none may escape
        raise PresetReject(BAD_PRIVATE_TESTS, f"private_test_cases: refused to unpickle: {exc}") from None


def _cases(parsed: Any, field: str, reason: str) -> list[dict]:
    """LCB `Test(**t)` checks, kept: each case has text `input`/`output` and a known `testtype`."""
    if not isinstance(parsed, list):
        raise PresetReject(reason, f"{field} must hold a JSON list, got {type(parsed).__name__}")
    for n, case in enumerate(parsed):
        if not isinstance(case, dict) or not all(isinstance(case.get(k), str) for k in ("input", "output")):
            raise PresetReject(reason, f"{field}[{n}] is not {{input: text, output: text, testtype}}")
        if case.get("testtype") not in TEST_TYPES:
            raise PresetReject(reason, f"{field}[{n}] has testtype {case.get('testtype')!r}, not one of {TEST_TYPES}")
    return parsed


def _our_tests(cases: list[dict], func_name: str | None, starter_code: str) -> list[dict]:
    """Ours: functional tests call `metadata.func_name` (LCB's own choice), else the starter code's method."""
    if func_name is None:
        from ded_ray.verifiers.code import convert_tests

        try:
            return convert_tests(cases, "lcb", starter_code=starter_code)
        except ValueError as exc:
            raise PresetReject("bad_tests", f"no metadata.func_name and {exc}") from None
    return [{"type": "functional", "fn_name": func_name, "input": c["input"], "output": c["output"]}
            if c["testtype"] == "functional" else {"type": "stdin", "input": c["input"], "output": c["output"]}
            for c in cases]


def _iso_date(value: Any) -> str:
    if hasattr(value, "isoformat") and not isinstance(value, str):  # a datetime / Timestamp (a parquet copy)
        return value.isoformat()
    try:
        return datetime.fromisoformat(value).isoformat()
    except (TypeError, ValueError):
        raise PresetReject("wrong_type", f"contest_date {value!r} is not an ISO date") from None


def _enum(row: dict, field: str, allowed: tuple[str, ...]) -> str:
    value = row.get(field)
    if value not in allowed:
        raise PresetReject("wrong_type", f"{field} {value!r} is not one of {', '.join(allowed)} (LiveCodeBench's)")
    return value


def convert(row: dict[str, Any]) -> dict[str, Any]:
    require(row, FIELDS, NAME)
    question = text(row, "question_content", NAME)
    starter_code = text(row, "starter_code", NAME, empty_ok=True)
    platform, difficulty = _enum(row, "platform", PLATFORMS), _enum(row, "difficulty", DIFFICULTIES)
    try:
        public = json.loads(text(row, "public_test_cases", NAME, empty_ok=True))
    except json.JSONDecodeError as exc:
        raise PresetReject("bad_tests", f"public_test_cases are not JSON: {exc}") from None
    public = _cases(public, "public_test_cases", "bad_tests")
    private = _cases(decode_private(row["private_test_cases"]), "private_test_cases", BAD_PRIVATE_TESTS)
    try:
        metadata = json.loads(text(row, "metadata", NAME, empty_ok=True) or "{}")
    except json.JSONDecodeError as exc:
        raise PresetReject("wrong_type", f"metadata is not JSON: {exc}") from None
    func_name = metadata.get("func_name") if isinstance(metadata, dict) else None
    meta = {
        "question_title": row["question_title"], "platform": platform, "contest_id": row["contest_id"],
        "contest_date": _iso_date(row["contest_date"]), "difficulty": difficulty, "starter_code": starter_code,
        "num_public_tests": len(public), "num_private_tests": len(private),
    }
    if func_name:
        meta["func_name"] = func_name
    return {
        "problem_id": row["question_id"],
        "question": question,
        "answer": "",
        "tests": _our_tests(public + private, func_name or None, starter_code),
        "meta": meta,
    }


PRESET = Preset(
    name=NAME,
    description="LiveCodeBench release rows (livecodebench/code_generation_lite), public + private tests",
    convert=convert,
    reasons=(BAD_PRIVATE_TESTS,),
)
