"""Student SFT as a Ray job: Ray Train TorchTrainer (+ DeepSpeed ZeRO-3 on the 8-GPU training nodes).

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/train.py --config ded_ray/configs/ded-32b.yaml run.root=s3://BUCKET/ded-runs \
        [--corpus PATH/corpus.parquet] [--model BASE_MODEL]

Without --corpus it trains on the run directory's corpus.parquet; the student lands in <run>/student/.
Exit status 0/1.
"""

import sys

from _entry import main


def with_run_corpus(argv: list[str], run_dir: str) -> list[str]:
    return argv if "--corpus" in argv else [*argv, "--corpus", f"{run_dir}/corpus.parquet"]


if __name__ == "__main__":
    sys.exit(main("train", complete_args=with_run_corpus))
