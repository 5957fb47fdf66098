"""Teacher rollouts as a Ray job: M samples per question on an autoscaling engine pool (vLLM on GPUs).

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/rollout.py --config ded_ray/configs/ded-32b.yaml run.root=s3://BUCKET/ded-runs \
        [--teacher QwQ-32B] [--problems data/my_problems.jsonl]

Rows land in the run's rollout stage folder in parts as they are generated; a resubmitted job generates only the missing
rollout_ids. Exit status 0/1.
"""

import sys

from _entry import main

if __name__ == "__main__":
    sys.exit(main("rollout"))
