"""Read a run directory back into tables for the funnel and the report (light columns only)."""

from __future__ import annotations

import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ded_ray import plan
from ded_ray import schema as S
from ded_ray.analysis.funnel import Funnel, build_funnel, rows_for_funnel
from ded_ray.rundir import RunDir, kept_rows

LIGHT_COLUMNS = [S.PROBLEM_ID, S.ROLLOUT_ID, S.DOMAIN, S.TEACHER, S.NUM_TOKENS, S.VERDICT, S.PASS_RATE,
                 S.DIVERSITY_MIN_DISTANCE, S.REJECT_REASON, S.REJECT_DETAIL, S.RESPONSE, S.QUESTION,
                 S.TOKEN_ENTROPY]


def _light(table) -> pd.DataFrame:
    return table.select([c for c in LIGHT_COLUMNS if c in table.column_names]).to_pandas()


def rejected_rows(run: RunDir, stage: str) -> pd.DataFrame:
    base = run.file("rejected", stage)
    if run.fs.get_file_info(base).type == pafs.FileType.NotFound:
        return pd.DataFrame()
    files = [i.path for i in run.fs.get_file_info(pafs.FileSelector(base, recursive=True))
             if i.path.endswith(".parquet")]
    frames = [_light(pq.read_table(path, filesystem=run.fs)) for path in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def curation_rows(run: RunDir) -> pd.DataFrame:
    """Every teacher trajectory of the run: the corpus rows and each rejected row with its stage."""
    final = run.stage(plan.FINAL)
    corpus = kept_rows(final.read()) if final.is_complete() else None
    corpus_df = _light(corpus) if corpus is not None and corpus.num_rows else pd.DataFrame(columns=[S.PROBLEM_ID])
    rejected = {stage.name: rejected_rows(run, stage.name) for stage in plan.CURATION}
    return rows_for_funnel(corpus_df, rejected)


def funnel(run: RunDir) -> Funnel:
    return build_funnel(curation_rows(run))
