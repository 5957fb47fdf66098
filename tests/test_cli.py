"""The `ded` command: help, unbuilt steps say so, and `ded run` writes a resumable run directory."""

from __future__ import annotations

import json
import subprocess
import sys

from ded_ray.cli import COMMANDS, EXIT_FAILED, main


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "ded_ray.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in ["run", "smoke-test", "rollout", "verify", "curate", "train", "eval", "serve", "report", "bench"]:
        assert name in out.stdout and name in COMMANDS


def test_bad_override_is_a_clear_failure(capsys):
    assert main(["run", "rollout.engin=hf"]) == EXIT_FAILED
    assert "valid keys here" in capsys.readouterr().err


def test_bad_input_paths_are_clear(capsys, tmp_path):
    assert main(["verify", "--input", str(tmp_path / "none.parquet"), "--output", str(tmp_path / "o.parquet")]) == EXIT_FAILED
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", "--run", str(tmp_path / "nothing")]) == EXIT_FAILED
    assert "no manifest.json" in capsys.readouterr().err


def test_problems_step_writes_manifest_and_resumes(tmp_path, ray_local, capsys):
    from ded_ray import plan, steps
    from ded_ray.config import load_config
    from ded_ray.rundir import open_run

    config = load_config(None, [f"run.root={tmp_path}", "run.name=t", "problems.sources.0.generated.per_family=3"])
    run = open_run(config)
    assert steps.load_problems(run, config).rows == 6
    manifest = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert manifest["config"]["run"]["name"] == "t"
    assert manifest["versions"]["ray"] and manifest["stages"][plan.PROBLEMS.name]["rows"] == 6
    assert (tmp_path / "t" / plan.PROBLEMS.folder / "_SUCCESS").exists()
    capsys.readouterr()
    assert steps.load_problems(open_run(config), config).kept == 6
    assert "reusing 6 rows" in capsys.readouterr().err


def test_run_refuses_to_mix_configs_in_one_run_dir(tmp_path, capsys):
    from ded_ray.config import load_config
    from ded_ray.rundir import open_run

    base = [f"run.root={tmp_path}", "run.name=t"]
    open_run(load_config(None, base))
    assert open_run(load_config(None, base + ["ray.num_cpus=1"]))  # where Ray runs is not the experiment
    assert main(["run", *base, "rollout.samples_per_question=9"]) == EXIT_FAILED
    assert "different config" in capsys.readouterr().err
