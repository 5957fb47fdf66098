"""The teacher smoke test (DED §3 stage 1): rank candidate teachers by the student each one produces.

For every candidate teacher ("arm"): one sample per smoke question through the `openai` engine against the
teacher's endpoint (a Ray Serve deployment we start, or the teacher's own URL), verified; a quick SFT of the
student on those responses; the resulting student evaluated on the configured benchmarks. Teachers are
ranked by that student's score (mean avg@k over the benchmarks), with the teacher's own accuracy beside it —
the paper's point is that the two can disagree. A failing arm (endpoint down, training error) is reported
with its reason while the others finish. Finished arms are read back on rerun, not recomputed.

Everything of an arm lives under `smoke/<teacher>/` (a run directory of its own); the summary is
`smoke.json` at the top of the run and the `smoke` section of the manifest. Once an arm is scored and its
diagnostics computed, its student and checkpoints are deleted (`smoke.keep_students` keeps them): a 32B
student per teacher would otherwise stay on storage for nothing.
"""

from __future__ import annotations

import traceback

import pandas as pd
import pyarrow as pa

from ded_ray import plan
from ded_ray import schema as S
from ded_ray.config import DEDConfig, TeacherConfig
from ded_ray.log import log
from ded_ray.rundir import RunDir, StageResult
from ded_ray.steps.evaluate import base_scores
from ded_ray.steps.generate import generate_rollouts, verify
from ded_ray.steps.student import train_and_evaluate

SMOKE_FILE = "smoke.json"
ARM_FILE = "arm.json"


def smoke_test(run: RunDir, config: DEDConfig, problems: StageResult) -> dict:
    """Run (or resume) every arm; returns the smoke summary with the ranked teachers and the winner.

    Two phases, so the teachers' Serve replicas never compete for CPUs/GPUs with training: first every
    teacher answers the smoke questions (served together), then Serve is shut down and each arm trains and
    evaluates its student.
    """
    if not config.teachers:
        raise ValueError("the smoke test needs at least one teacher in `teachers`")
    questions = _smoke_questions(problems, config.smoke.questions)
    if not config.eval.benchmarks:
        raise ValueError("the smoke test ranks teachers by evaluating students: configure `eval.benchmarks`")
    base = base_scores(run, config)
    arms = {t.name: _arm_run(run, t).read_json(ARM_FILE) for t in config.teachers}
    todo = [t for t in config.teachers if not (arms[t.name] and arms[t.name].get("status") == "ok")]
    answers: dict[str, pd.DataFrame | Exception] = {}
    if todo:
        endpoints = _endpoints(todo, config)
        try:
            for teacher in todo:
                answers[teacher.name] = _answer(run, config, teacher, questions, endpoints.get(teacher.name))
        finally:
            _stop_serving(endpoints)
    for teacher in config.teachers:
        if teacher.name in answers:
            arms[teacher.name] = _train_and_evaluate(run, config, teacher, answers[teacher.name], base)
        else:
            log(f"[smoke {teacher.name}] complete: reusing")
    summary = _rank([arms[t.name] for t in config.teachers], {b: r.get("avg_at_k") for b, r in base.items()})
    _write_summary(run, summary)
    return summary


# --- one arm -------------------------------------------------------------------------------------------


def _arm_run(run: RunDir, teacher: TeacherConfig) -> RunDir:
    return run.sub("smoke", teacher.name)


def _answer(run: RunDir, config: DEDConfig, teacher: TeacherConfig, questions: pa.Table,
            endpoint: str | None) -> pd.DataFrame | Exception:
    """One response per smoke question from the teacher's endpoint, verified; an Exception if that failed."""
    arm_run = _arm_run(run, teacher)
    served = teacher
    if endpoint is not None:  # our Serve deployment or the teacher's own URL, through the openai engine
        api_key_env = teacher.api_key_env if teacher.endpoint else config.smoke.serve_api_key_env
        served = teacher.model_copy(update={"endpoint": endpoint, "model": teacher.model or teacher.name,
                                            "api_key_env": api_key_env})
    rollout_config = config.rollout.model_copy(update={"engine": "openai"} if served.endpoint else {})
    arm_config = config.model_copy(update={"rollout": rollout_config})
    try:
        rollouts = generate_rollouts(arm_run, arm_config, questions, [served], stage=plan.SAMPLE, samples=1)
        if rollouts.rows and rollouts.kept == 0:
            raise RuntimeError(f"every request to the teacher failed: {rollouts.rejected}")
        # One answer per smoke question: a small table the driver may hold.
        return verify(arm_run, arm_config, rollouts, stage=plan.SAMPLE_VERIFY, filter_incorrect=False).table().to_pandas()
    except Exception as exc:  # an arm's failure is a result to report, not a reason to stop the others
        log(f"[smoke {teacher.name}] generation failed: {exc}")
        return exc


def _train_and_evaluate(run: RunDir, config: DEDConfig, teacher: TeacherConfig,
                        verified: pd.DataFrame | Exception, base: dict) -> dict:
    arm_run = _arm_run(run, teacher)
    try:
        if isinstance(verified, Exception):
            raise verified
        accuracy = float((verified[S.VERDICT] == "correct").mean()) if len(verified) else 0.0
        corpus = _smoke_corpus(verified, config)
        if corpus.empty:
            raise ValueError(f"teacher {teacher.name!r} produced no usable response for the smoke corpus")
        train_config = config.smoke.train or config.train.model_copy(update={"epochs": config.smoke.epochs})
        trained = train_and_evaluate(arm_run, config, corpus, teacher.name, base=base, train_config=train_config)
        result = {
            "name": teacher.name, "status": "ok", "questions": int(len(verified)),
            "teacher_accuracy": accuracy,
            "mean_response_tokens": float(verified[S.NUM_TOKENS].mean()) if len(verified) else None,
            "corpus_rows": int(len(corpus)), "student_dir": trained["student_dir"],
            "student": {bench: _student_score(r) for bench, r in trained["benchmarks"].items()},
            "diagnostics": _diagnostics(config, teacher, verified, trained["student_dir"]),
            "student_removed": not config.smoke.keep_students,
        }
    except Exception as exc:
        log(f"[smoke {teacher.name}] failed: {exc}")
        result = {"name": teacher.name, "status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                  "traceback": "".join(traceback.format_exception(exc, limit=5))}
    # arm.json first: a crash in between only leaves the student on disk (the other order could leave an arm
    # to redo whose student is gone).
    arm_run.write_json(ARM_FILE, result)
    if result.get("student_removed"):
        _remove_student(arm_run)
    return result


def _remove_student(arm_run: RunDir) -> None:
    """Delete the arm's student folder and Ray Train checkpoints; arm.json, eval.json and the rest stay."""
    from ded_ray.train.loop import STUDENT_DIR
    from ded_ray.train.trainer import RUN_NAME

    for folder in (STUDENT_DIR, RUN_NAME):
        if arm_run.exists(folder):
            arm_run.fs.delete_dir(arm_run.file(folder))


def _diagnostics(config: DEDConfig, teacher: TeacherConfig, verified: pd.DataFrame, student_dir: str) -> dict:
    """The paper's §4 analysis for one arm: the base student's token entropy on the teacher's responses
    (teacher forcing) and the PCA shift from the base to this arm's student on benchmark questions.

    A Ray task with `smoke.diagnostics`' GPUs and CPUs, not work in the job driver: two copies of a 32B
    student do not fit a head node, and on a cluster the head has no GPU."""
    import ray

    from ded_ray.analysis.diagnostics import arm_diagnostics
    from ded_ray.io import read_problems

    cfg = config.smoke.diagnostics
    try:
        texts = [q for b in config.eval.benchmarks for q in read_problems(b.source)[0][S.QUESTION]]
        task = ray.remote(arm_diagnostics).options(num_gpus=cfg.gpus, num_cpus=cfg.cpus, max_retries=0)
        return ray.get(task.remote(
            config.student.model, student_dir, verified[S.PROMPT].tolist(), verified[S.RESPONSE].tolist(), texts,
            rollouts=verified, label=teacher.name, max_responses=cfg.max_responses,
            max_response_tokens=cfg.max_response_tokens, max_texts=cfg.max_texts, dtype=cfg.dtype))
    except Exception as exc:  # diagnostics explain a ranking; they never decide whether an arm failed
        log(f"[smoke {teacher.name}] diagnostics failed: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"}


def _student_score(result: dict) -> dict:
    return {key: result.get(key) for key in ("avg_at_k", "stderr", "mean_tokens", "gain")}


def _smoke_corpus(verified: pd.DataFrame, config: DEDConfig) -> pd.DataFrame:
    """The arm's training set: every response (the paper's smoke corpus is unfiltered), or only correct ones."""
    from ded_ray.stages.to_sft import build_corpus

    rows = verified[verified[S.RESPONSE].fillna("").str.len() > 0]
    if config.smoke.correct_only:
        rows = rows[rows[S.VERDICT] == "correct"]
    return build_corpus(rows.drop(columns=[S.REJECT_REASON], errors="ignore"),
                        config.student.system_prompt, few_shot=config.student.few_shot)


# --- around the arms -----------------------------------------------------------------------------------


def _smoke_questions(problems: StageResult, n: int) -> pa.Table:
    """The first n problems by id, taken from each domain in turn: a fixed, reproducible subset (the same for
    every teacher) in which a mixed run's smaller domain is not left out by the sort."""
    df = problems.table(columns=S.PROBLEM_SCHEMA.names).to_pandas().sort_values(S.PROBLEM_ID)
    rank = df.groupby(S.DOMAIN).cumcount()
    df = df.assign(_rank=rank).sort_values(["_rank", S.DOMAIN], kind="stable").head(n).drop(columns="_rank")
    return pa.Table.from_pandas(df, preserve_index=False)


def _endpoints(teachers: list[TeacherConfig], config: DEDConfig) -> dict[str, str]:
    """Teachers without an endpoint of their own are served on Ray Serve for the smoke test."""
    local = [t for t in teachers if t.endpoint is None]
    if not local:
        return {}
    from ded_ray.serve.deploy import serve_teachers

    return serve_teachers(local, config.smoke)


def _stop_serving(endpoints: dict[str, str]) -> None:
    if endpoints:
        from ded_ray.serve.deploy import shutdown_teachers

        shutdown_teachers()


def _rank(arms: list[dict], base: dict) -> dict:
    def score(arm: dict) -> float:
        values = [s["avg_at_k"] for s in arm.get("student", {}).values() if s.get("avg_at_k") is not None]
        return sum(values) / len(values) if values else float("-inf")

    ok = sorted((a for a in arms if a.get("status") == "ok"), key=lambda a: (-score(a), a["name"]))
    for rank, arm in enumerate(ok, start=1):
        arm["rank"] = rank
        arm["score"] = score(arm)
    by_teacher_accuracy = sorted(ok, key=lambda a: -a.get("teacher_accuracy", 0))
    return {
        "winner": ok[0]["name"] if ok else None,
        "base": base,
        "teachers": ok + [a for a in arms if a.get("status") != "ok"],
        # The paper's point: the most accurate teacher is not always the best one to learn from.
        "teacher_accuracy_agrees": bool(ok) and by_teacher_accuracy[0]["name"] == ok[0]["name"],
    }


def _write_summary(run: RunDir, summary: dict) -> None:
    from ded_ray.analysis.smoke_chart import smoke_chart_png

    chart = smoke_chart_png(summary)
    run.write_json(SMOKE_FILE, summary)
    run.update_manifest(smoke={**summary, "chart_png": chart}, teacher=summary["winner"])
    for arm in summary["teachers"]:
        status = f"rank {arm['rank']}, student score {arm['score']:.3f}" if arm.get("status") == "ok" else arm.get("reason")
        log(f"[smoke] {arm['name']}: {status}")
    if summary["winner"] is None:
        raise RuntimeError("every teacher arm of the smoke test failed; see smoke.json for the reasons")
