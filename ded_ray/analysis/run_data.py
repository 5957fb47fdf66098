"""Read a run directory back into tables for the funnel and the report: only the columns each needs (the
funnel counts ids and reasons; the report also reads responses, for its histograms and side-by-side view)."""

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
COUNT_COLUMNS = [S.PROBLEM_ID, S.ROLLOUT_ID, S.DOMAIN, S.REJECT_REASON]


def _read(path: str, run: RunDir, columns: list[str]) -> pd.DataFrame:
    present = set(pq.read_schema(path, filesystem=run.fs).names)
    return pq.read_table(path, filesystem=run.fs, columns=[c for c in columns if c in present]).to_pandas()


def rejected_rows(run: RunDir, stage: str, columns: list[str] = LIGHT_COLUMNS) -> pd.DataFrame:
    base = run.file("rejected", stage)
    if run.fs.get_file_info(base).type == pafs.FileType.NotFound:
        return pd.DataFrame()
    files = [i.path for i in run.fs.get_file_info(pafs.FileSelector(base, recursive=True))
             if i.path.endswith(".parquet")]
    frames = [_read(path, run, columns) for path in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def curation_rows(run: RunDir, columns: list[str] = LIGHT_COLUMNS) -> pd.DataFrame:
    """Every teacher trajectory of the run (`columns` of it): the corpus rows and each rejected row with its stage."""
    final = run.stage(plan.FINAL)
    corpus = kept_rows(final.read(columns=list(dict.fromkeys([*columns, S.REJECT_REASON])))) \
        if final.is_complete() else None
    corpus_df = (corpus.select([c for c in columns if c in corpus.column_names]).to_pandas()
                 if corpus is not None and corpus.num_rows else pd.DataFrame(columns=[S.PROBLEM_ID]))
    rejected = {stage.name: rejected_rows(run, stage.name, columns) for stage in plan.CURATION}
    return rows_for_funnel(corpus_df, rejected)


def funnel(run: RunDir) -> Funnel:
    """The counts alone: ids, domains and reasons are read, never a response."""
    return build_funnel(curation_rows(run, COUNT_COLUMNS))
