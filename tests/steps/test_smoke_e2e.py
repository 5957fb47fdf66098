"""The teacher smoke test end to end: two Serve-hosted teachers and one whose endpoint is down."""

from __future__ import annotations

import json

import pytest

from ded_ray.cli import main

pytestmark = [pytest.mark.engine, pytest.mark.timeout(2400)]  # minutes of CPU generation and training


def test_smoke_test_ranks_teachers_and_reports_the_dead_one(tmp_path, ray_local, capsys):
    args = [
        "smoke-test", f"run.root={tmp_path}", "run.name=smoke",
        "problems.sources.0.generated.per_family=3",
        "smoke.questions=6", "smoke.serve_engine=hf", f"smoke.port={_free_port()}",
        "train.epochs=1", "eval.k=1", "eval.benchmarks.0.source.generated.per_family=2",
        # a third candidate: any OpenAI-compatible URL; nothing listens on this one
        "teachers.2={name: down, endpoint: 'http://127.0.0.1:9/v1', model: nothing}",
    ]
    assert main(args) == 0
    summary = json.loads((tmp_path / "smoke" / "smoke.json").read_text())
    by_name = {t["name"]: t for t in summary["teachers"]}
    assert set(by_name) == {"step-1shot", "terse-1shot", "down"}

    down = by_name["down"]
    assert down["status"] == "failed" and "failed" in down["reason"]
    for name in ("step-1shot", "terse-1shot"):
        arm = by_name[name]
        assert arm["status"] == "ok" and arm["questions"] == 6 and arm["rank"] in (1, 2)
        assert 0.0 <= arm["teacher_accuracy"] <= 1.0 and arm["mean_response_tokens"] > 0
        diagnostics = arm["diagnostics"]  # computed in a Ray task with smoke.diagnostics' resources
        assert "error" not in diagnostics["entropy"] and "error" not in diagnostics["pca_shift"], diagnostics
        score = arm["student"]["arith-heldout"]
        assert 0.0 <= score["avg_at_k"] <= 1.0 and score["gain"] is not None
    assert summary["winner"] in ("step-1shot", "terse-1shot")
    assert summary["winner"] == min(summary["teachers"][:2], key=lambda t: t["rank"])["name"]
    assert "base" in summary and summary["base"]["arith-heldout"] is not None

    capsys.readouterr()
    assert main(args) == 0  # finished arms are read back, the failed one is retried (and fails again)
    err = capsys.readouterr().err
    assert "[smoke step-1shot] complete: reusing" in err and "[smoke terse-1shot] complete: reusing" in err


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
