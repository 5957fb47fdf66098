"""The pipeline plan: DED's stage sequence, declared once.

Every stage the pipeline writes into a run directory is one `StageSpec` line below, in pipeline order. The
rest of the package derives what it needs from these lines — the run directory's folder names, the funnel's
stage order and reason → stage map, the paper's Table 3 levels, the curation stages the report counts and the
arms of `ded ablate` — so adding a filter is one line here (plus the stage and its config; see
docs/extending.md). Folder numbers are stable (gaps leave room for new stages without renumbering), so a
run directory written by this layout keeps resuming as stages are added.

A stage is **row-wise** (each output row depends on one input row: a rerun cut off midway skips the ids
already written) or **grouped** (it needs a group or the whole table: a rerun redoes it whole).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fnmatch import fnmatch
from typing import Any

from ded_ray import schema as S
from ded_ray.io import READ_REASONS
from ded_ray.stages.correctness import REASONS as CORRECTNESS_REASONS
from ded_ray.stages.decontaminate import CONTAMINATED
from ded_ray.stages.diversity import REASONS as DIVERSITY_REASONS
from ded_ray.stages.mix import OVER_QUOTA
from ded_ray.stages.pass_rate import TOO_EASY
from ded_ray.stages.repetition import REASONS as REPETITION_REASONS
from ded_ray.stages.repetition import RepetitionStage

# Written into the manifest; a run directory of another layout is refused instead of resumed (`check_layout`).
LAYOUT = 2
# The engines' error slugs (engines/output.py, engines/openai.py): rows the engine could not generate.
ROLLOUT_ERRORS = ("prompt_too_long", "engine_error", "timeout", "connection_error", "http_*")


@dataclass(frozen=True)
class StageSpec:
    """One stage of the plan.

    number: stable folder number (`<number>_<name>/` in the run directory).
    grouped: False = row-wise, resumed by `id_column`; True = needs groups, redone whole on resume.
    reasons: the reject reasons it may emit (shell-style patterns allowed), for the funnel's reason → stage map.
    closes: the Table 3 level whose rows are this stage's kept rows (and the `ded ablate` arm of that name).
    curation: its rows are teacher trajectories counted by the curation funnel (not the student's samples).
    runs, config: for a quality filter, its stage class (built with `runs.from_config(cfg)`) and the dotted
        path of its config section (`cfg`, e.g. "curate.repetition"; a section with `enabled: false` passes
        every row through).
    """

    number: int
    name: str
    grouped: bool = False
    reasons: tuple[str, ...] = ()
    closes: str | None = None
    curation: bool = True
    id_column: str = S.ROLLOUT_ID
    runs: Any = None
    config: str | None = None

    @property
    def folder(self) -> str:
        return f"{self.number:02d}_{self.name}"

    @property
    def resume_column(self) -> str | None:
        """The id a cut-off rerun skips by (None: redone whole)."""
        return None if self.grouped else self.id_column

    def emits(self, reason: str) -> bool:
        return any(fnmatch(reason, pattern) for pattern in self.reasons)


# --- the curation chain (the paper's Figure 2) ----------------------------------------------------------
PROBLEMS = StageSpec(10, "problems", grouped=True, reasons=READ_REASONS, curation=False, id_column=S.PROBLEM_ID)
ROLLOUT = StageSpec(20, "rollout", reasons=ROLLOUT_ERRORS, closes="all")
CORRECTNESS = StageSpec(30, "correctness", reasons=CORRECTNESS_REASONS)
# Quality filters after the correctness check, applied in this order. To add one: a line here.
FILTERS = (
    StageSpec(35, "repetition", reasons=REPETITION_REASONS, runs=RepetitionStage, config="curate.repetition"),
)
STUDENT_ROLLOUT = StageSpec(40, "student_rollout", curation=False)
STUDENT_VERIFY = StageSpec(45, "student_verify", curation=False)
PASS_RATE = StageSpec(50, "pass_rate", reasons=(TOO_EASY,), closes="right-hard")
DIVERSITY = StageSpec(60, "diversity", grouped=True, reasons=DIVERSITY_REASONS, closes="right-hard-diverse")
DECONTAMINATE = StageSpec(70, "decontaminate", reasons=(CONTAMINATED,))
MIX = StageSpec(80, "mix", grouped=True, reasons=(OVER_QUOTA,), closes="corpus")


def _closing(level: str, stages: tuple[StageSpec, ...]) -> tuple[StageSpec, ...]:
    """`stages` with the last one closing `level` ("right" is whatever the last quality check keeps)."""
    return (*stages[:-1], replace(stages[-1], closes=level))


PIPELINE = (PROBLEMS, ROLLOUT, *_closing("right", (CORRECTNESS, *FILTERS)), STUDENT_ROLLOUT, STUDENT_VERIFY,
            PASS_RATE, DIVERSITY, DECONTAMINATE, MIX)

# --- sampling a model: evaluation, and the smoke test's teacher answers (each in a run directory of its own)
SAMPLE = StageSpec(10, "rollout", curation=False)
SAMPLE_VERIFY = StageSpec(20, "verify", curation=False)

# --- derived -------------------------------------------------------------------------------------------
CURATION = tuple(s for s in PIPELINE if s.curation)  # the stages whose rows the funnel counts
QUALITY_FILTERS = tuple(s for s in PIPELINE if s.runs is not None)  # as run, "right" closed by the last
FINAL = PIPELINE[-1]  # its kept rows are the corpus
LEVELS = tuple(s.closes for s in CURATION if s.closes)  # Table 3, in order: all … corpus
STAGE_ORDER = tuple(s.name for s in PIPELINE)


def level_stage(level: str) -> StageSpec:
    """The stage whose kept rows are the rows at Table 3 level `level`."""
    for stage in CURATION:
        if stage.closes == level:
            return stage
    raise KeyError(f"no Table 3 level {level!r}; the levels are {LEVELS}")


def reason_stage(reason: str) -> str:
    """The curation stage that emits `reason` ("other" when none declares it)."""
    for stage in CURATION:
        if stage.emits(reason):
            return stage.name
    return "other"


def _check(plan: tuple[StageSpec, ...]) -> None:
    numbers = [s.number for s in plan]
    if numbers != sorted(set(numbers)):
        raise ValueError(f"plan: stage numbers must be unique and increasing, got {numbers}")
    if len({s.name for s in plan}) != len(plan):
        raise ValueError("plan: stage names must be unique")
    for stage in FILTERS:
        if stage.grouped or stage.runs is None or stage.config is None:
            raise ValueError(f"plan: filter {stage.name!r} must be row-wise with `runs` and `config` set")


_check(PIPELINE)
