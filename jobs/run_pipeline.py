"""The whole DED pipeline as a Ray job (problems → rollouts → verify → curate → corpus → SFT → eval → report).

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/run_pipeline.py --config ded_ray/configs/ded-32b.yaml run.root=s3://BUCKET/ded-runs

Submitting the same command again resumes: finished stages and rows already in the run directory are reused.
Exit status 0 on success, 1 on failure; the run directory is logged at the start and the end.
"""

import sys

from _entry import main

if __name__ == "__main__":
    sys.exit(main("run"))
