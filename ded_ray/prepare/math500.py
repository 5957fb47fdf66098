"""MATH-500 (HuggingFaceH4/MATH-500, `test.jsonl`): the 500-problem MATH test subset of "Let's Verify Step by Step".

Source columns (dataset card; the same as OpenAI's PRM800K `math_splits/test.jsonl`): `problem`, `solution`,
`answer` (LaTeX), `subject`, `level` (1-5), `unique_id` (e.g. "test/precalculus/807.json").

Output row: `problem_id` (= `unique_id`), `question`, `answer`, `subject`, `level`. The worked solution is
not copied: evaluation needs only the gold answer.
"""

from __future__ import annotations

from ded_ray.prepare.base import Converter, HubDataset, Reject, SourceRow, as_text

HUB = HubDataset("HuggingFaceH4/MATH-500", ("test.jsonl",))

MISSING_QUESTION = "missing_question"
MISSING_ANSWER = "missing_answer"


def convert(row: SourceRow) -> dict | Reject:
    data = row.data
    problem_id = as_text(data.get("unique_id")) or str(row.index)
    question, answer = as_text(data.get("problem")), as_text(data.get("answer"))
    if not question:
        return Reject(MISSING_QUESTION, f"{problem_id}: empty problem")
    if not answer:
        return Reject(MISSING_ANSWER, f"{problem_id}: empty answer")
    return {"problem_id": problem_id, "question": question, "answer": answer,
            "subject": as_text(data.get("subject")), "level": data.get("level")}


CONVERTER = Converter(
    name="math500",
    description="MATH-500 eval set (HuggingFaceH4/MATH-500)",
    hub=HUB,
    required=("problem", "answer", "unique_id"),
    convert=convert,
    reasons=(MISSING_QUESTION, MISSING_ANSWER),
)
