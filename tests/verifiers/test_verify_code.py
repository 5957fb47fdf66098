"""Code verification on real benchmarks: HumanEval, LeetCode (rllm), LiveCodeBench; mutants must fail."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from ded_ray.verifiers.code import convert_tests, extract_program, run_tests
from ded_ray.verifiers.sandbox_child import compare_stdout, compare_values


def jsonl(shared_data, path: str) -> list[dict]:
    return [json.loads(line) for line in (shared_data / path).read_text().splitlines() if line.strip()]


def run_many(jobs):
    """jobs: (code, tests) pairs, two at a time (the machine has 2 cores)."""
    with ThreadPoolExecutor(max_workers=2) as threads:
        return list(threads.map(lambda job: run_tests(*job), jobs))


# --- pieces --------------------------------------------------------------------------------------------


def test_extract_program_takes_last_python_fence_after_think():
    response = ("<think>```python\nprint('draft')\n```</think>\nFirst:\n```python\nprint(1)\n```\n"
                "Better:\n```python\nprint(2)\n```\nDone.")
    assert extract_program(response) == "print(2)"
    assert extract_program("x = int(input())\nprint(x)") == "x = int(input())\nprint(x)"
    assert extract_program("<think>still thinking") is None
    assert extract_program("```cpp\nint main(){}\n```") is None


@pytest.mark.parametrize("got, want, ok", [  # LiveCodeBench's rules: more cases in test_code_limits.py
    ("3\n", "3", True), ("  1 2  3 \n\n", "1 2 3\n", True), ("1.00\n", "1", True),
    ("0.3333333\n", "0.333333333", False),  # no float tolerance, as in LiveCodeBench
    ("1000001\n", "1000000\n", False), ("Yes\n", "No\n", False), ("1\n2\n", "1\n", False),
])
def test_compare_stdout(got, want, ok):
    assert compare_stdout(got, want)[0] is ok


def test_compare_values():
    assert compare_values((1, 2), [1, 2]) and compare_values(1, 1.0) and compare_values(True, 1)  # Python ==
    assert not compare_values(0.1 + 0.2, 0.3) and not compare_values([1, 2], [2, 1])


def test_convert_lcb_functional_and_stdin():
    tests = convert_tests([{"input": "5\n[[2, 4]]", "output": "[3]", "testtype": "functional"}], "lcb",
                          starter_code="class Solution:\n    def shortest(self, n: int, q: List[List[int]]) -> List[int]:\n")
    assert tests == [{"type": "functional", "fn_name": "shortest", "input": "5\n[[2, 4]]", "output": "[3]"}]
    raw = repr([{"input": "1\n", "output": "2\n", "testtype": "stdin"}])  # the Python-repr form
    assert convert_tests(raw, "lcb") == [{"type": "stdin", "input": "1\n", "output": "2\n"}]


def test_convert_leetcode_moves_the_check_call_into_entry_point():
    raw = {"functional": "def check(candidate):\n    assert candidate(x = 1) == 2\n\n\ncheck(Solution().addOne)"}
    (test,) = convert_tests(raw, "leetcode")
    assert test["entry_point"] == "Solution().addOne" and "check(Solution" not in test["code"]
    program = "class Solution:\n    def addOne(self, x: int) -> int:\n        return x + 1\n"
    assert run_tests(program, [test]).status == "correct"
    assert run_tests(program.replace("x + 1", "x + 2"), [test]).status == "wrong"


def test_malformed_tests_are_an_error_not_wrong():
    verdict = run_tests("print(1)", [{"type": "stdin", "input": ""}])
    assert verdict.status == "error" and "output" in verdict.detail


def test_no_program_is_unparsable():
    assert run_tests("<think>hmm", [{"type": "stdin", "input": "", "output": ""}]).status == "unparsable"


# --- HumanEval -----------------------------------------------------------------------------------------


def humaneval_jobs(shared_data, every: int):
    rows = jsonl(shared_data, "humaneval/humaneval.jsonl")
    assert len(rows) == 164
    rows = rows[::every]
    return rows, [(r["prompt"] + r["canonical_solution"],
                   convert_tests(r["test"], "humaneval", entry_point=r["entry_point"])) for r in rows]


def test_humaneval_canonical_solutions_pass_sample(shared_data):
    rows, jobs = humaneval_jobs(shared_data, every=8)  # 21 problems; the full set is an engine test
    verdicts = run_many(jobs)
    assert [(r["task_id"], v.detail) for r, v in zip(rows, verdicts) if v.status != "correct"] == []


@pytest.mark.engine
def test_humaneval_canonical_solutions_all_pass(shared_data):
    rows, jobs = humaneval_jobs(shared_data, every=1)
    verdicts = run_many(jobs)
    assert sum(v.status == "correct" for v in verdicts) == 164, [
        (r["task_id"], v.detail) for r, v in zip(rows, verdicts) if v.status != "correct"]


def test_humaneval_off_by_one_mutants_fail(shared_data):
    rows = {r["task_id"]: r for r in jsonl(shared_data, "humaneval/humaneval.jsonl")}
    mutants = {  # task -> (original snippet, mutated snippet)
        "HumanEval/2": ("return number % 1.0", "return number % 1.0 + 1"),
        "HumanEval/13": ("return a", "return a + 1"),
        "HumanEval/23": ("return len(string)", "return len(string) - 1"),
        "HumanEval/53": ("return x + y", "return x - y"),
        "HumanEval/55": ("return fib(n - 1) + fib(n - 2)", "return fib(n - 1) + fib(n - 3)"),
    }
    jobs = []
    for task, (before, after) in mutants.items():
        solution = rows[task]["canonical_solution"]
        assert before in solution, f"{task}: mutation anchor missing"
        jobs.append((rows[task]["prompt"] + solution.replace(before, after, 1),
                     convert_tests(rows[task]["test"], "humaneval", entry_point=rows[task]["entry_point"])))
    assert [v.status for v in run_many(jobs)] == ["wrong"] * len(jobs)


# --- LeetCode (rllm) -----------------------------------------------------------------------------------


def leetcode_jobs(shared_data, every: int):
    rows = jsonl(shared_data, "leetcode_rllm/leetcode_test_200.jsonl")[::every]
    return rows, [(r["reference_solution"], convert_tests(r["tests"], "leetcode")) for r in rows]


def test_leetcode_reference_solutions_pass_sample(shared_data):
    rows, jobs = leetcode_jobs(shared_data, every=10)  # 20 problems; the full set is an engine test
    verdicts = run_many(jobs)
    assert [(r["idx"], v.detail) for r, v in zip(rows, verdicts) if v.status != "correct"] == []


@pytest.mark.engine
def test_leetcode_reference_solutions_all_pass(shared_data):
    rows, jobs = leetcode_jobs(shared_data, every=1)
    verdicts = run_many(jobs)
    # One reference solution imports sortedcontainers (part of LeetCode's environment): install it.
    assert [(r["idx"], v.detail) for r, v in zip(rows, verdicts) if v.status != "correct"] == []


def test_leetcode_mutants_fail(shared_data):
    rows = jsonl(shared_data, "leetcode_rllm/leetcode_test_200.jsonl")
    first = rows[0]["reference_solution"]
    mutants = [first.replace("return n - i", "return n - i + 1"),  # off by one
               first.replace("count += 1", "count -= 1")]  # wrong operator
    assert all(m != first for m in mutants)
    tests = convert_tests(rows[0]["tests"], "leetcode")
    assert run_tests(first, tests).status == "correct"
    assert [run_tests(m, tests).status for m in mutants] == ["wrong", "wrong"]


# --- LiveCodeBench -------------------------------------------------------------------------------------

LCB_PROGRAMS = {  # question_id -> a correct program written for this test
    "abc365_a": "y = int(input())\nprint(366 if (y % 4 == 0 and y % 100 != 0) or y % 400 == 0 else 365)\n",
    "abc365_b": "n = int(input())\na = list(map(int, input().split()))\n"
                "print(sorted(range(n), key=lambda i: a[i])[-2] + 1)\n",
    "abc366_a": "n, t, a = map(int, input().split())\nprint('Yes' if t > n // 2 or a > n // 2 else 'No')\n",
    "abc367_a": "a, b, c = map(int, input().split())\n"
                "asleep = (b < c and b <= a < c) or (b > c and (a >= b or a < c))\nprint('No' if asleep else 'Yes')\n",
    "abc368_a": "n, k = map(int, input().split())\na = input().split()\nprint(' '.join(a[n - k:] + a[:n - k]))\n",
}


def test_livecodebench_stdin_problems_with_known_programs(shared_data):
    rows = {r["question_id"]: r for r in jsonl(shared_data, "livecodebench/lcb_v5_2408_2502_public_tests.jsonl")}
    jobs, wrong_jobs = [], []
    for qid, program in LCB_PROGRAMS.items():
        tests = convert_tests(rows[qid]["tests"], "lcb", starter_code=rows[qid]["starter_code"])
        assert all(t["type"] == "stdin" for t in tests)
        jobs.append((f"Here is my solution:\n```python\n{program}```\n", tests))
        wrong_jobs.append((program + "print()\nprint(0)\n", tests))  # extra output lines must fail
    assert [v.status for v in run_many(jobs)] == ["correct"] * len(jobs)
    assert [v.status for v in run_many(wrong_jobs)] == ["wrong"] * len(jobs)


def test_livecodebench_functional_problem(shared_data):
    rows = jsonl(shared_data, "livecodebench/lcb_v5_2408_2502_public_tests.jsonl")
    row = next(r for r in rows if "shortestDistanceAfterQueries" in r["starter_code"])
    tests = convert_tests(row["tests"], "lcb", starter_code=row["starter_code"])
    program = """
class Solution:
    def shortestDistanceAfterQueries(self, n: int, queries: List[List[int]]) -> List[int]:
        graph = [[i + 1] for i in range(n - 1)] + [[]]
        out = []
        for u, v in queries:
            graph[u].append(v)
            dist = [-1] * n
            dist[0] = 0
            queue = deque([0])
            while queue:
                x = queue.popleft()
                for y in graph[x]:
                    if dist[y] < 0:
                        dist[y] = dist[x] + 1
                        queue.append(y)
            out.append(dist[n - 1])
        return out
"""
    assert run_tests(f"```python\n{program}```", tests).status == "correct"
    assert run_tests(f"```python\n{program.replace('dist[x] + 1', 'dist[x] + 2')}```", tests).status == "wrong"
