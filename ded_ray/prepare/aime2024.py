"""AIME 2024 (HuggingFaceH4/aime_2024, 30 problems of AIME I and II): the set lighteval's `aime24` uses.

Source columns (dataset card; rows taken from AI-MO/aimo-validation-aime): `id` (int), `problem`,
`solution`, `answer` (an integer as text), `url` (the AoPS wiki page), `year`.

Output row: `problem_id` ("2024-I-1" … "2024-II-15", read from the AoPS url; the source `id` when the url
does not say), `question`, `answer`, `url`.
"""

from __future__ import annotations

import re

from ded_ray.prepare.base import Converter, HubDataset, Reject, SourceRow, as_text

HUB = HubDataset("HuggingFaceH4/aime_2024", ("data/train-*.parquet",))
AOPS_PROBLEM = re.compile(r"(\d{4})_AIME_(I{1,2})_Problems/Problem_(\d+)")

MISSING_QUESTION = "missing_question"
MISSING_ANSWER = "missing_answer"


def convert(row: SourceRow) -> dict | Reject:
    data = row.data
    url = as_text(data.get("url"))
    problem_id = aime_id(url) or as_text(data.get("id")) or str(row.index)
    question, answer = as_text(data.get("problem")), as_text(data.get("answer"))
    if not question:
        return Reject(MISSING_QUESTION, f"{problem_id}: empty problem")
    if not answer:
        return Reject(MISSING_ANSWER, f"{problem_id}: empty answer")
    return {"problem_id": problem_id, "question": question, "answer": answer, "url": url}


def aime_id(url: str) -> str | None:
    """"2024-I-1" from ".../2024_AIME_I_Problems/Problem_1"; None when the url is not an AoPS problem page."""
    match = AOPS_PROBLEM.search(url)
    return f"{match[1]}-{match[2]}-{int(match[3])}" if match else None


CONVERTER = Converter(
    name="aime2024",
    description="AIME 2024 eval set (HuggingFaceH4/aime_2024)",
    hub=HUB,
    required=("problem", "answer"),
    convert=convert,
    reasons=(MISSING_QUESTION, MISSING_ANSWER),
)
