"""Evaluation as a Ray job: avg@k pass@1 with standard errors on the configured benchmarks.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/evaluate.py --config ded_ray/configs/ded-32b.yaml run.root=s3://BUCKET/ded-runs \
        [--model PATH_OR_NAME] [--benchmarks aime2024,math500] [--label student]

Without --model it evaluates the run directory's student/ when training has finished (else the config's
student.model). Results go to <run>/eval.json; exit status 0/1.
"""

import os
import sys

from _entry import main


def with_run_student(argv: list[str], run_dir: str) -> list[str]:
    student = f"{run_dir}/student"
    if "--model" in argv or not os.path.exists(f"{student}/config.json"):
        return argv
    return [*argv, "--model", student] + ([] if "--label" in argv else ["--label", "student"])


if __name__ == "__main__":
    sys.exit(main("eval", complete_args=with_run_student))
