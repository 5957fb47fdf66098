"""AIME 2025 (opencompass/AIME2025, 15 + 15 problems): the set OpenCompass and verifiers' `aime2025` use.

Source files and columns (dataset card: configs `AIME2025-I` and `AIME2025-II`): `aime2025-I.jsonl` and
`aime2025-II.jsonl`, rows `{question, answer}` in problem order. Other published copies (GAIR-NLP's
AIME-Preview) name the text `problem` and carry an `id` such as "II-3"; both are accepted.

Output row: `problem_id` ("2025-I-1" … "2025-II-15": the part from the file name, the number from the row's
position in it; a row's own "I-3"-style `id` wins), `question`, `answer`.
"""

from __future__ import annotations

import re

from ded_ray.prepare.base import Converter, HubDataset, Reject, SourceRow, as_text, first_present

HUB = HubDataset("opencompass/AIME2025", ("aime2025-I.jsonl", "aime2025-II.jsonl"))
YEAR = 2025
PART_IN_FILE_NAME = re.compile(r"-(I{1,2})\.jsonl$", re.IGNORECASE)
PART_AND_NUMBER = re.compile(r"^(I{1,2})-(\d+)$")

MISSING_QUESTION = "missing_question"
MISSING_ANSWER = "missing_answer"


def convert(row: SourceRow) -> dict | Reject:
    problem_id = aime_id(row)
    question = as_text(first_present(row.data, "question|problem"))
    answer = as_text(row.data.get("answer"))
    if not question:
        return Reject(MISSING_QUESTION, f"{problem_id}: empty question")
    if not answer:
        return Reject(MISSING_ANSWER, f"{problem_id}: empty answer")
    return {"problem_id": problem_id, "question": question, "answer": answer}


def aime_id(row: SourceRow) -> str:
    own = PART_AND_NUMBER.match(as_text(row.data.get("id")))
    if own:
        return f"{YEAR}-{own[1]}-{int(own[2])}"
    part = PART_IN_FILE_NAME.search(row.file.name)
    if part:
        return f"{YEAR}-{part[1].upper()}-{row.index_in_file + 1}"
    return f"{YEAR}-{row.index + 1}"  # one file holding both parts: the position is all there is


CONVERTER = Converter(
    name="aime2025",
    description="AIME 2025 eval set (opencompass/AIME2025, parts I and II)",
    hub=HUB,
    required=("question|problem", "answer"),
    convert=convert,
    reasons=(MISSING_QUESTION, MISSING_ANSWER),
)
