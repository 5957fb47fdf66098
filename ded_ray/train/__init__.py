"""Student SFT on Ray Train: `ded_ray.train.trainer.train_student(corpus, model, config, output_dir)`.

tokenize.py     chat template -> input ids + labels on the final assistant turn; over-long rows rejected
packing.py      padded or packed micro-batches (position ids reset, block-diagonal / varlen attention)
loss.py         token-summed loss: packing and accumulation do not change it
backends.py     DDP or DeepSpeed (ZeRO 0-3) behind one interface; checkpoints; Hugging Face export
loop.py         train_loop_per_worker: Ray Data shard -> steps -> ray.train.report (metrics, checkpoints)
trainer.py      the TorchTrainer around it: tokenise via Ray Data, memory estimate, run, publish student/
memory.py       the per-GPU memory plan (states, activations, loss, buffers), checked before any worker starts
progress.py     the newest step (loss, tokens/s, time left) printed on the driver while training runs
deepspeed_config.py, optim.py, faults.py (fault drills), synthetic.py (small corpora for tests and benches)
"""
