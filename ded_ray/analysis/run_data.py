"""Read a run directory back into tables for the funnel and the report."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pyarrow.fs as pafs

from ded_ray import schema as S
from ded_ray.rundir import RunDir
from ded_ray.runner import kept_rows
from ded_ray.stages.funnel import Funnel, build_funnel, rows_for_funnel

# The stages whose rejections the curation funnel counts (teacher trajectories only: not the student's
# pass-rate or evaluation rollouts, and not unreadable problem rows, which never became trajectories).
CURATION_STAGES = ("rollout", "correctness", "pass_rate", "diversity", "decontaminate", "mix")
FINAL_STAGE = (10, "mix")
LIGHT_COLUMNS = [S.PROBLEM_ID, S.ROLLOUT_ID, S.DOMAIN, S.TEACHER, S.NUM_TOKENS, S.VERDICT, S.PASS_RATE,
                 S.DIVERSITY_MIN_DISTANCE, S.REJECT_REASON, S.REJECT_DETAIL, S.RESPONSE, S.QUESTION,
                 S.TOKEN_ENTROPY]


def stage_rows(run: RunDir, index: int, name: str) -> pd.DataFrame:
    table = run.stage(index, name).read()
    columns = [c for c in LIGHT_COLUMNS if c in table.column_names]
    return table.select(columns).to_pandas() if table.num_rows else pd.DataFrame(columns=columns)


def rejected_rows(run: RunDir, stage: str) -> pd.DataFrame:
    base = run.file("rejected", stage)
    if run.fs.get_file_info(base).type == pafs.FileType.NotFound:
        return pd.DataFrame()
    files = [i.path for i in run.fs.get_file_info(pafs.FileSelector(base, recursive=True))
             if i.path.endswith(".parquet")]
    frames = []
    for path in files:
        table = pq.read_table(path, filesystem=run.fs)
        frames.append(table.select([c for c in LIGHT_COLUMNS if c in table.column_names]).to_pandas())
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def curation_rows(run: RunDir) -> pd.DataFrame:
    """Every teacher trajectory of the run: the corpus rows and each rejected row with its stage."""
    final = run.stage(*FINAL_STAGE)
    corpus = kept_rows(final.read()) if final.is_complete() else None
    corpus_df = (corpus.select([c for c in LIGHT_COLUMNS if c in corpus.column_names]).to_pandas()
                 if corpus is not None and corpus.num_rows else pd.DataFrame(columns=[S.PROBLEM_ID]))
    rejected = {stage: rejected_rows(run, stage) for stage in CURATION_STAGES}
    return rows_for_funnel(corpus_df, rejected)


def funnel(run: RunDir) -> Funnel:
    return build_funnel(curation_rows(run))
