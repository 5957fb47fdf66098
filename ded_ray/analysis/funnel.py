"""The funnel: where every row went — counts per stage and reason, and the paper's Table 3 per domain.

Input: one table of *all* rows that entered curation (the corpus rows and every rejected row together, e.g.
`pd.concat([kept_rows, rejected_rows])`), with `reject_reason` (null = in the corpus), optionally
`reject_stage` (the runner's stage name), `domain` and `problem_id`. A row's stage is its `reject_stage`,
else the plan stage that declares its reason (`plan.reason_stage`), else "other".

Table 3 of the paper counts, per domain, what survives each step: all → right (length, format, correctness
and the quality filters) → right-hard (pass rate) → right-hard-diverse (diversity), and we add the final
corpus (after decontamination and mixing). The levels and the stage that closes each come from the plan: a
row reaches a level when it is in the corpus or was rejected by a stage *after* the level's closing stage —
i.e. the level's rows are that stage's kept rows, the rows `ded ablate` trains on. Rows are trajectories;
`questions` counts distinct problems with at least one row at that level. (The paper's "+Right"/"+Right-Hard"
rows count one response per question; ours count every sampled trajectory, so compare `questions` there.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ded_ray import plan
from ded_ray import schema as S

# Stages in pipeline order; a stage the plan does not know ("other") sorts first.
POSITION = {name: i for i, name in enumerate(("other",) + plan.STAGE_ORDER)}


@dataclass
class Funnel:
    """Counts of one curation run. `by_reason`: rows per (stage, reason); `table3`: rows and questions per
    (domain, level); `total` = `corpus` + sum of `by_reason` always (checked by `adds_up`)."""

    total: int
    corpus: int
    by_reason: list[dict[str, Any]] = field(default_factory=list)  # {stage, reason, rows, questions}
    table3: list[dict[str, Any]] = field(default_factory=list)  # {domain, level, rows, questions}

    @property
    def rejected(self) -> int:
        return sum(r["rows"] for r in self.by_reason)

    @property
    def adds_up(self) -> bool:
        return self.total == self.corpus + self.rejected

    def to_dict(self) -> dict[str, Any]:
        nested: dict[str, dict[str, int]] = {}
        for r in self.by_reason:
            nested.setdefault(r["stage"], {})[r["reason"]] = r["rows"]
        return {
            "total": self.total, "corpus": self.corpus, "rejected": nested,
            "by_reason": self.by_reason, "table3": self.table3,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


def row_stages(rows: pd.DataFrame) -> pd.Series:
    """The stage that rejected each row (None for corpus rows)."""
    reasons = rows[S.REJECT_REASON] if S.REJECT_REASON in rows else pd.Series(None, index=rows.index, dtype=object)
    guessed = reasons.map(lambda r: None if pd.isna(r) else plan.reason_stage(r))
    if S.REJECT_STAGE in rows:
        given = rows[S.REJECT_STAGE].astype(object).where(rows[S.REJECT_STAGE].notna(), None)
        guessed = given.where(given.notna() & reasons.notna(), guessed)
    return guessed.astype(object).where(reasons.notna(), None)


def build_funnel(rows: pd.DataFrame) -> Funnel:
    """Count every row of `rows` (corpus + rejected) by stage, reason and Table 3 level."""
    reasons = rows[S.REJECT_REASON] if S.REJECT_REASON in rows else pd.Series(None, index=rows.index, dtype=object)
    stages = row_stages(rows)
    domains = rows[S.DOMAIN].astype(object).fillna("unknown") if S.DOMAIN in rows else pd.Series("all", index=rows.index)
    problems = rows[S.PROBLEM_ID].astype(str) if S.PROBLEM_ID in rows else pd.Series(rows.index.astype(str), index=rows.index)
    in_corpus = reasons.isna()

    frame = pd.DataFrame({"stage": stages, "reason": reasons.astype(object), "problem": problems})[~in_corpus]
    by_reason = [
        {"stage": stage, "reason": reason, "rows": len(group), "questions": int(group["problem"].nunique())}
        for (stage, reason), group in frame.groupby(["stage", "reason"], sort=False)
    ]
    by_reason.sort(key=lambda r: (POSITION.get(r["stage"], 0), r["stage"], -r["rows"], r["reason"]))

    stage_pos = stages.map(lambda s: POSITION.get(s, 0) if s is not None else None)
    table3 = []
    for domain in sorted(domains.unique()):
        in_domain = domains.eq(domain)
        for level in plan.LEVELS:
            cut = POSITION[plan.level_stage(level).name]
            reached = in_corpus | stage_pos.map(lambda p, cut=cut: p is not None and p > cut)
            mask = in_domain & reached.astype(bool)
            table3.append(
                {"domain": domain, "level": level, "rows": int(mask.sum()), "questions": int(problems[mask].nunique())}
            )
    return Funnel(total=len(rows), corpus=int(in_corpus.sum()), by_reason=by_reason, table3=table3)


def format_table3(funnel: Funnel) -> str:
    """Plain-text Table 3 (levels as rows, one `rows / questions` column per domain) and the reasons."""
    domains = sorted({r["domain"] for r in funnel.table3})
    cells = {(r["domain"], r["level"]): f'{r["rows"]} / {r["questions"]}' for r in funnel.table3}
    header = ["level"] + [f"{d} (rows / questions)" for d in domains]
    lines = [[level] + [cells.get((d, level), "-") for d in domains] for level in plan.LEVELS]
    widths = [max(len(str(row[i])) for row in [header] + lines) for i in range(len(header))]
    out = ["  ".join(str(v).ljust(w) for v, w in zip(header, widths))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)) for row in lines]
    out.append("")
    out.append(f"rejected rows by stage/reason (total {funnel.total} = corpus {funnel.corpus} + rejected {funnel.rejected}):")
    out += [f'  {r["stage"]}/{r["reason"]}: {r["rows"]} rows, {r["questions"]} questions' for r in funnel.by_reason]
    return "\n".join(out)


def print_funnel(funnel: Funnel, console=None) -> None:
    """Print Table 3 and the reasons with rich when it is installed, else as plain text."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(format_table3(funnel))
        return
    console = console or Console()
    domains = sorted({r["domain"] for r in funnel.table3})
    cells = {(r["domain"], r["level"]): f'{r["rows"]} / {r["questions"]}' for r in funnel.table3}
    table = Table(title="Curation funnel (rows / questions), as the paper's Table 3")
    table.add_column("level")
    for d in domains:
        table.add_column(d, justify="right")
    for level in plan.LEVELS:
        table.add_row(level, *[cells.get((d, level), "-") for d in domains])
    console.print(table)
    reasons = Table(title=f"Rejected: {funnel.rejected} of {funnel.total} rows")
    for name in ("stage", "reason", "rows", "questions"):
        reasons.add_column(name, justify="right" if name in ("rows", "questions") else "left")
    for r in funnel.by_reason:
        reasons.add_row(r["stage"], r["reason"], str(r["rows"]), str(r["questions"]))
    console.print(reasons)


def rows_for_funnel(kept_rows: pd.DataFrame, rejected_by_stage: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One table for `build_funnel` from the corpus rows and each stage's rejected rows (`reject_stage` set)."""
    parts = [kept_rows.assign(**{S.REJECT_STAGE: None})]
    parts += [frame.assign(**{S.REJECT_STAGE: stage}) for stage, frame in rejected_by_stage.items() if len(frame)]
    return pd.concat(parts, ignore_index=True)
