"""The teacher smoke test (DED §3 stage 1): rank candidate teachers by the student each one produces.

For every candidate teacher ("arm"): one sample per smoke question through the `openai` engine against the
teacher's endpoint (a Ray Serve deployment we start, or the teacher's own URL), verified; a quick SFT of the
student on those responses; the resulting student evaluated on the configured benchmarks. Teachers are
ranked by that student's score (mean avg@k over the benchmarks), with the teacher's own accuracy beside it —
the paper's point is that the two can disagree. A failing arm (endpoint down, training error) is reported
with its reason while the others finish. Finished arms are read back on rerun, not recomputed.

Everything of an arm lives under `smoke/<teacher>/` (a run directory of its own); the summary is
`smoke.json` at the top of the run and the `smoke` section of the manifest.
"""

from __future__ import annotations

import json
import traceback

import pandas as pd
import pyarrow as pa

from ded_ray import schema as S
from ded_ray.config import DEDConfig, TeacherConfig
from ded_ray.log import log
from ded_ray.rundir import RunDir
from ded_ray.steps.evaluate import evaluate_model, read_eval
from ded_ray.steps.generate import generate_rollouts, verify

SMOKE_FILE = "smoke.json"
ARM_FILE = "arm.json"


def smoke_test(run: RunDir, config: DEDConfig, problems: pa.Table) -> dict:
    """Run (or resume) every arm; returns the smoke summary with the ranked teachers and the winner.

    Two phases, so the teachers' Serve replicas never compete for CPUs/GPUs with training: first every
    teacher answers the smoke questions (served together), then Serve is shut down and each arm trains and
    evaluates its student.
    """
    if not config.teachers:
        raise ValueError("the smoke test needs at least one teacher in `teachers`")
    questions = _smoke_questions(problems, config.smoke.questions)
    base = _base_scores(run, config)
    arms = {t.name: _read_json(RunDir(run.file("smoke"), t.name), ARM_FILE) for t in config.teachers}
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
    summary = _rank([arms[t.name] for t in config.teachers], base)
    _write_summary(run, summary)
    return summary


# --- one arm -------------------------------------------------------------------------------------------


def _arm_run(run: RunDir, teacher: TeacherConfig) -> RunDir:
    return RunDir(run.file("smoke"), teacher.name)


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
        rollouts = generate_rollouts(arm_run, arm_config, questions, [served], samples=1)
        if rollouts.num_rows and (rollouts.to_pandas()[S.ERROR].notna()).all():
            reasons = rollouts.to_pandas()[S.ERROR].value_counts().to_dict()
            raise RuntimeError(f"every request to the teacher failed: {reasons}")
        return verify(arm_run, arm_config, rollouts, filter_incorrect=False).to_pandas()
    except Exception as exc:  # an arm's failure is a result to report, not a reason to stop the others
        log(f"[smoke {teacher.name}] generation failed: {exc}")
        return exc


def _train_and_evaluate(run: RunDir, config: DEDConfig, teacher: TeacherConfig,
                        verified: pd.DataFrame | Exception, base: dict) -> dict:
    from ded_ray.train.trainer import train_student

    arm_run = _arm_run(run, teacher)
    try:
        if isinstance(verified, Exception):
            raise verified
        accuracy = float((verified[S.VERDICT] == "correct").mean()) if len(verified) else 0.0
        corpus = _smoke_corpus(verified, config)
        if corpus.empty:
            raise ValueError(f"teacher {teacher.name!r} produced no usable response for the smoke corpus")
        train_config = config.smoke.train or config.train.model_copy(update={"epochs": 1})
        trained = train_student(corpus, config.student.model, train_config, arm_run.path)
        scores = evaluate_model(arm_run, config, trained.student_dir, teacher.name)
        result = {
            "name": teacher.name, "status": "ok", "questions": int(len(verified)),
            "teacher_accuracy": accuracy,
            "mean_response_tokens": float(verified[S.NUM_TOKENS].mean()) if len(verified) else None,
            "corpus_rows": int(len(corpus)), "student_dir": trained.student_dir,
            "student": {bench: _student_score(r, base.get(bench)) for bench, r in scores.items()},
            "diagnostics": _diagnostics(config, teacher, verified, trained.student_dir),
        }
    except Exception as exc:
        log(f"[smoke {teacher.name}] failed: {exc}")
        result = {"name": teacher.name, "status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                  "traceback": "".join(traceback.format_exception(exc, limit=5))}
    _write_json(arm_run, ARM_FILE, result)
    return result


def _diagnostics(config: DEDConfig, teacher: TeacherConfig, verified: pd.DataFrame, student_dir: str) -> dict:
    """The paper's §4 analysis for one arm: the base student's token entropy on the teacher's responses
    (teacher forcing) and the PCA shift from the base to this arm's student on benchmark questions."""
    from ded_ray.analysis.diagnostics import arm_diagnostics
    from ded_ray.io import read_problems
    from ded_ray.models import resolve_model

    try:
        texts = [q for b in config.eval.benchmarks for q in read_problems(b.source)[0][S.QUESTION]]
        return arm_diagnostics(str(resolve_model(config.student.model)), student_dir, verified[S.PROMPT].tolist(),
                               verified[S.RESPONSE].tolist(), texts, rollouts=verified, label=teacher.name)
    except Exception as exc:  # diagnostics explain a ranking; they never decide whether an arm failed
        log(f"[smoke {teacher.name}] diagnostics failed: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"}


def _student_score(result: dict, base: float | None) -> dict:
    score = result.get("avg_at_k")
    return {"avg_at_k": score, "stderr": result.get("stderr"), "mean_tokens": result.get("mean_tokens"),
            "gain": None if score is None or base is None else score - base}


def _smoke_corpus(verified: pd.DataFrame, config: DEDConfig) -> pd.DataFrame:
    """The arm's training set: every response (the paper's smoke corpus is unfiltered), or only correct ones."""
    from ded_ray.stages.to_sft import build_corpus

    rows = verified[verified[S.RESPONSE].fillna("").str.len() > 0]
    if config.smoke.correct_only:
        rows = rows[rows[S.VERDICT] == "correct"]
    return build_corpus(rows.drop(columns=[S.REJECT_REASON], errors="ignore"),
                        system_prompt=config.student.system_prompt)


# --- around the arms -----------------------------------------------------------------------------------


def _smoke_questions(problems: pa.Table, n: int) -> pa.Table:
    """The first n problems by id: a fixed, reproducible subset (the same for every teacher)."""
    df = problems.to_pandas().sort_values(S.PROBLEM_ID).head(n)
    return pa.Table.from_pandas(df, preserve_index=False)


def _base_scores(run: RunDir, config: DEDConfig) -> dict:
    """The untrained student's avg@k per benchmark (shared with the pipeline's 'base' evaluation)."""
    if not config.eval.benchmarks:
        raise ValueError("the smoke test ranks teachers by evaluating students: configure `eval.benchmarks`")
    results = read_eval(run).get("base", {}).get("benchmarks")
    if results is None:
        results = evaluate_model(run, config, config.student.model, "base", slot=0)
    return {bench: r.get("avg_at_k") for bench, r in results.items()}


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
    _write_json(run, SMOKE_FILE, summary)
    run.update_manifest(smoke={**summary, "chart_png": chart}, teacher=summary["winner"])
    for arm in summary["teachers"]:
        status = f"rank {arm['rank']}, student score {arm['score']:.3f}" if arm.get("status") == "ok" else arm.get("reason")
        log(f"[smoke] {arm['name']}: {status}")
    if summary["winner"] is None:
        raise RuntimeError("every teacher arm of the smoke test failed; see smoke.json for the reasons")


def _read_json(run: RunDir, name: str) -> dict | None:
    try:
        with run.fs.open_input_stream(run.file(name)) as src:
            return json.loads(src.read().decode())
    except FileNotFoundError:
        return None


def _write_json(run: RunDir, name: str, value: dict) -> None:
    with run.fs.open_output_stream(run.file(name)) as out:
        out.write(json.dumps(value, indent=2, default=str).encode())
