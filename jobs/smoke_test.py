"""Teacher selection as a Ray job: one sample per question per teacher, a quick SFT of the student on each
teacher's responses, rank the teachers by how that student scores (the paper's smoke test).

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/smoke_test.py --config ded_ray/configs/ded-32b.yaml run.root=s3://BUCKET/ded-runs teacher=auto

The ranking is printed as JSON and stored under the run directory (smoke/); exit status 0/1.
"""

import sys

from _entry import main

if __name__ == "__main__":
    sys.exit(main("smoke-test"))
