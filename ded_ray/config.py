"""Typed configuration: one pydantic model per stage, composed into `DEDConfig`.

YAML files are grouped by role (run / problems / teachers / student / rollout / verify / curate / train /
eval / smoke). `load_config(path, overrides)` reads a YAML file (or the embedded default), applies
`key.sub=value` overrides and validates the result. Unknown keys are rejected with the offending key and
the keys that are valid at that place, so a typo never silently falls back to a default.
"""

from __future__ import annotations

from datetime import date
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from ded_ray.errors import UserError
from ded_ray.verifiers.registry import check_domain

DEFAULT_CONFIG = "demo.yaml"


class ConfigError(UserError, ValueError):
    """A config file or override is invalid; the message says which key and how to fix it."""


class Section(BaseModel):
    """Base of every config model: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --- where things run and land -------------------------------------------------------------------------


class RunConfig(Section):
    name: str = "demo"  # run directory is <root>/<name>
    root: str = "runs"  # local path or a pyarrow-filesystem URI (s3://, gs://)
    seed: int = 0  # base seed: per-rollout seeds derive from it, so reruns reproduce
    part_rows: int = 256  # rows per output part file; resume granularity within a stage


class RayConfig(Section):
    # "local": start a local Ray sized to this machine; "auto": join the cluster this process runs on;
    # "ray://host:10001": connect as a Ray client.
    address: str = "local"
    num_cpus: int | None = None  # local only; None = all cores
    dashboard: bool = False  # local only; bound to 127.0.0.1
    runtime_env: dict[str, Any] = Field(default_factory=dict)
    # A stage that fails because Ray lost a worker, actor or node is run again from its written parts, in the
    # same job, this many times (rundir.runner.run_stage); a bug still fails at once.
    stage_retries: int = Field(3, ge=0)


# --- problems ------------------------------------------------------------------------------------------


class GeneratedProblems(Section):
    """Arithmetic problems generated with a seed: the embedded demo's data set (no benchmark text)."""

    families: list[str] = Field(default_factory=lambda: ["add_1digit", "mul_1digit"])
    per_family: int = 20
    seed: int = 0
    # Sources none of whose questions this set may contain (e.g. the held-out benchmark): the set is drawn
    # around them, so training and evaluation are disjoint by construction, not by luck.
    exclude: list["ProblemSource"] = Field(default_factory=list)


class ProblemSource(Section):
    """One problem file (jsonl, parquet or a saved `datasets` folder) or a generated set.

    `columns` maps our column names to the source's (e.g. {question: problem, problem_id: unique_id});
    `tests_format` converts a code source's tests into ours (lcb, humaneval, leetcode or native).
    `format` is a file format, or a benchmark preset (livecodebench, codeforces, leetcode, humaneval:
    `ded_ray/presets/`) that reads rows in that benchmark's own published format, the file by its suffix;
    a preset source is a code source unless it sets `domain:`, and explicit `columns:` still win.
    """

    name: str | None = None  # the `source` column; default: the file stem or "generated"
    path: str | None = None
    format: Literal["auto", "jsonl", "parquet", "datasets",
                    "livecodebench", "codeforces", "leetcode", "humaneval"] = "auto"
    split: str | None = None  # for a saved DatasetDict
    domain: Annotated[str, AfterValidator(check_domain)] = "math"  # a key of verifiers.registry.SPECS
    columns: dict[str, str] = Field(default_factory=dict)
    tests_format: Literal["native", "lcb", "humaneval", "leetcode"] = "native"
    limit: int | None = None
    generated: GeneratedProblems | None = None

    @model_validator(mode="after")
    def _one_origin(self) -> "ProblemSource":
        if (self.path is None) == (self.generated is None):
            raise ValueError("a problem source needs exactly one of `path` or `generated`")
        return self


GeneratedProblems.model_rebuild()


class ProblemsConfig(Section):
    sources: list[ProblemSource] = Field(
        default_factory=lambda: [ProblemSource(generated=GeneratedProblems())]
    )


# --- models --------------------------------------------------------------------------------------------


class SamplingConfig(Section):
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 160  # new tokens per response
    logprobs: int | None = None  # top-k logprobs to ask the engine for (token entropy); None = off


class FewShotExample(Section):
    user: str
    assistant: str


def _check_domain_keys(value: Any) -> Any:
    """A per-domain prompt setting ({math: ..., code: ...}) names known domains, or "*" for any other."""
    if isinstance(value, dict):
        for domain in value:
            if domain != "*":
                check_domain(domain)
    return value


# A prompt setting for every domain, or per domain (stages/prompt.py: a worked example is domain-specific).
SystemPrompt = Annotated[str | dict[str, str] | None, AfterValidator(_check_domain_keys)]
FewShot = Annotated[list[FewShotExample] | dict[str, list[FewShotExample]], AfterValidator(_check_domain_keys)]


class TeacherConfig(Section):
    """A teacher = a name + a model (or endpoint) + a prompt + sampling: 'same model, other prompt' counts."""

    name: str
    model: str | None = None  # built-in name, local folder or cached HF id
    endpoint: str | None = None  # OpenAI-compatible base URL (…/v1); the key comes from api_key_env
    api_key_env: str | None = None
    system_prompt: SystemPrompt = None  # one text, or per domain: {math: ..., code: ...}
    few_shot: FewShot = Field(default_factory=list)  # worked examples: one list, or per domain
    think_prefix: bool = False  # start the assistant turn with "<think>\n" (R1-style models)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)

    @model_validator(mode="after")
    def _model_or_endpoint(self) -> "TeacherConfig":
        if self.model is None and self.endpoint is None:
            raise ValueError(f"teacher {self.name!r} needs a `model` or an `endpoint`")
        return self


class StudentConfig(Section):
    model: str = "smollm2-135m"
    system_prompt: SystemPrompt = None  # one text, or per domain: {math: ..., code: ...}
    few_shot: FewShot = Field(default_factory=list)  # worked examples: one list, or per domain
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)


class ModelsConfig(Section):
    """Where Hugging Face models live for every node (ded_ray/model_store.py; filled by `ded fetch`).

    `root`: a folder at the same path on every node (a shared mount, or one filled per node with
    `ded fetch --per-node`), or a storage URI (s3://, gs://) each node copies from once into its cache dir.
    None = models come from each machine's local Hugging Face cache, as before. `init_ray` hands the root
    and revisions to every Ray worker (runtime_env env_vars), so a model is resolved on the node loading it.
    """

    root: str | None = None
    revisions: dict[str, str] = Field(default_factory=dict)  # HF id -> branch, tag or commit to pin (else "main")


# --- stages --------------------------------------------------------------------------------------------


class RolloutConfig(Section):
    engine: Literal["auto", "vllm", "hf", "openai"] = "auto"
    samples_per_question: int = Field(4, ge=1)  # M
    batch_size: int = 32
    concurrency: tuple[int, int] = (1, 1)  # (min, max) actors: the autoscaling pool
    num_gpus_per_actor: float = 0.0
    num_cpus_per_actor: float = 1.0
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    max_model_len: int | None = None
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)  # passed through to the engine untouched
    request_timeout_s: float = 120.0  # openai engine: per HTTP request
    max_retries: int = 3  # openai engine: retries of a 429/5xx/connection error, then an error row
    retry_backoff_s: float = 1.0  # openai engine: first backoff, doubled per retry (Retry-After wins)
    max_concurrent_requests: int = 8  # openai engine: requests in flight per actor (a rate limit)
    # openai engine: ask for SSE (`stream: true`) so tokens keep flowing on long reasoning completions through
    # proxies that cut idle connections; request_timeout_s then bounds the silence between two chunks
    stream: bool = False


class VerifyConfig(Section):
    math_timeout_s: float = 5.0
    code_timeout_s: float = 10.0  # wall-clock budget for all of one program's tests
    # Per test (wall and CPU); 6 s is LiveCodeBench's default. A problem's meta `time_limit_s` overrides it.
    code_test_timeout_s: float = Field(6.0, gt=0)
    code_all_tests: bool = False  # False: stop at the first failing test (the verdict is decided by then)
    require_think: bool = False  # format_ok demands exactly one <think>...</think>
    max_tokens: int = 16384  # length_ok: counted with the student's tokenizer
    concurrency: tuple[int, int] = (1, 2)
    batch_size: int = 64
    judge_endpoint: str | None = None  # optional LLM-as-judge for unparsable/wrong math; off by default
    judge_model: str | None = None
    judge_api_key_env: str | None = None  # env var holding the judge's API key (never the key itself)
    math_workers: int = Field(1, ge=1)  # math-verify processes per verify actor
    code_workers: int = Field(1, ge=1)  # sandboxed programs run at once per verify actor
    code_memory_mb: int = Field(2048, ge=64)  # address space per test process; meta `memory_limit_mb` overrides
    code_nproc: int = Field(64, ge=4)  # processes + threads one sandboxed program may hold


class PassRateConfig(Section):
    # The paper gives neither k nor the threshold (PAPER.md §1.3). Ours: k = 4 student rollouts with the
    # student's sampling; with threshold 0.75 only questions solved 4/4 are dropped as too easy.
    enabled: bool = True
    k: int = Field(4, ge=1)  # student rollouts per question
    threshold: float = Field(0.75, ge=0.0, le=1.0)  # drop questions with pass_rate > threshold


class DiversityConfig(Section):
    # The paper: "Levenshtein distance … farthest P responses" only (§1.4). Ours: normalised distance,
    # greedy max-min; P = 4 matches its implied ~4 responses per question (965 / 237).
    per_question: int = Field(4, ge=1)  # P
    unit: Literal["token", "char"] = "token"  # token ids (student tokenizer) are ~4x shorter than chars
    # "think": only the <think>…</think> part. "reasoning" (ours): the think part (whole response when untagged)
    # minus the last sentence holding \boxed{ (from the sentence start to the end of its line); rows of
    # domain "code" compare the whole response unchanged. See stages/diversity.py.
    compare: Literal["think", "response", "reasoning"] = "response"
    # The options below are ours and off by default (the paper's plain criterion): on short noisy traces the
    # plain distance rewards surface difference (many identical pairs; a broken trace is the far one).
    # dedupe: trajectories with equal compared text (whitespace-normalised) count once; the copies are
    # rejected `duplicate`, even when fewer than P distinct ones are left.
    dedupe: bool = False
    # quality_guard: only trajectories whose compared length (in `unit`) is within [median / length_band,
    # median * length_band] of the question's correct ones enter farthest-first; when fewer than P are in the
    # band the rest fill up, closest to the median first, so no question keeps fewer than without the guard.
    # Out-of-band rows not kept are rejected `outside_length_band`.
    quality_guard: bool = False
    length_band: float = Field(2.0, gt=1.0)


class MixConfig(Section):
    quotas: dict[str, int] = Field(default_factory=dict)  # domain -> max rows (or questions); empty = keep all
    by: Literal["trajectory", "question"] = "trajectory"  # what a quota counts
    seed: int = 0  # the seeded choice of which rows fill a quota


class DecontamConfig(Section):
    # The paper does no decontamination; we reject training questions sharing an n-word run with an eval item.
    eval_sets: list[ProblemSource] = Field(default_factory=list)
    ngram: int = Field(13, ge=1)  # words; 8 flags shared boilerplate in MATH ("relatively prime positive integers")
    min_words: int = Field(8, ge=1)  # a text under this many words is contaminated only if identical to an eval item


class RepetitionConfig(Section):
    # The paper has no repetition filter; this one is ours (stages/repetition.py). It rejects teacher traces whose
    # text loops: the share of word n-grams that already occurred earlier in the response is above max_share.
    enabled: bool = True
    # words; 50 (2-3 sentences) never matches stock phrases or formula fragments but catches paragraph loops
    ngram: int = Field(50, ge=1)
    # on 3043 real R1-Distill traces, every trace over 0.19 loops until max_tokens and the highest non-loop is 0.135
    max_share: float = Field(0.17, ge=0.0, le=1.0)
    # a loop until max_tokens is thousands of words; in a shorter text one repeated passage is a large share
    min_words: int = Field(200, ge=1)


class CurateConfig(Section):
    # Scheduling of the curation stages (quality filters, pass rate, diversity, decontamination): their
    # actor pool (min, max) and rows per batch. Each is cheap next to generation: one actor suffices here.
    concurrency: tuple[int, int] = (1, 1)
    batch_size: int = Field(256, ge=1)
    repetition: RepetitionConfig = Field(default_factory=RepetitionConfig)
    pass_rate: PassRateConfig = Field(default_factory=PassRateConfig)
    diversity: DiversityConfig = Field(default_factory=DiversityConfig)
    mix: MixConfig = Field(default_factory=MixConfig)
    decontaminate: DecontamConfig = Field(default_factory=DecontamConfig)


class TrainConfig(Section):
    """Student SFT on Ray Train (ded_ray/train). Batch sizes count samples; lengths count tokens."""

    num_workers: int = Field(1, ge=1)  # data-parallel ranks (GPUs, or CPU processes)
    use_gpu: bool = False
    num_cpus_per_worker: float = 1.0  # CPU cores reserved per worker; torch uses that many threads
    # Intra-op threads per worker when they should differ from the reserved CPUs (e.g. a 1-CPU reservation
    # on a 2-core laptop whose other stages are idle while training runs); None = the reservation.
    torch_threads: int | None = None
    strategy: Literal["ddp", "deepspeed"] = "ddp"
    zero_stage: Literal[0, 1, 2, 3] = 0  # deepspeed only
    offload_optimizer: bool = False  # ZeRO-Offload: optimizer states in host memory (GPU runs only)
    offload_params: bool = False  # ZeRO-3 only: parameters in host memory too
    bf16: bool = False
    # The student's stored dtype; "trained": the weights' own (fp32 master weights under DDP on CPU, bf16 under
    # DeepSpeed bf16). Narrowing fp32 training to a bf16 base's dtype erases short fine-tunes: after 2 Adam
    # steps at lr 5e-5, 84% of SmolLM2's weights round back to their base value.
    export_dtype: Literal["trained", "bfloat16", "float16", "float32"] = "trained"
    gradient_checkpointing: bool = False
    # auto: flash_attention_2 on GPU when flash-attn is installed (varlen packing), else sdpa (block mask)
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "auto"
    max_seq_len: int = Field(1024, ge=8)  # prompt + response tokens per sample
    truncate: bool = False  # False: over-long samples are rejected with a reason
    packing: bool = True
    pack_tokens: int | None = None  # tokens per packed row (micro_batch_size rows per micro-batch); None = max_seq_len
    learning_rate: float = 1e-5
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"  # our choice (paper: unspecified)
    warmup_ratio: float = Field(0.05, ge=0.0, le=1.0)
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # our choice (LLaMA-Factory's default; paper: unspecified)
    epochs: int = Field(1, ge=1)
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs, benchmarks)
    global_batch_size: int = Field(8, ge=1)  # samples per optimizer step, across workers and accumulation
    micro_batch_size: int = Field(4, ge=1)  # rows per forward pass: samples when padding, packed rows when packing
    # SFT loss (train/loss.py): plain = full-vocabulary fp32 logits for every position; chunked = lm_head and
    # cross-entropy `loss_chunk_tokens` positions at a time, recomputed in backward (exact); fused = liger-kernel
    # (GPU, not ZeRO-3). auto = fused when usable, else chunked from 4,096 tokens per micro-batch, else plain.
    loss: Literal["auto", "plain", "chunked", "fused"] = "auto"
    loss_chunk_tokens: int = Field(1024, ge=1)  # ~1.7 GiB of logits per chunk at a 152k vocabulary
    # The per-GPU memory plan (train/memory.py) is checked before any worker starts (not on CPU runs):
    # error = stop with the numbers and the cheapest fixes; warn = log them and start anyway.
    memory_check: Literal["warn", "error"] = "error"
    # Usable memory per GPU: an 80 GB H100/H800 shows 81,559 MiB (79.6 GiB) in nvidia-smi; the CUDA context,
    # cuBLAS workspaces and NCCL buffers take about 1.5 GiB outside torch's allocator.
    gpu_memory_gib: float = Field(78.0, gt=0)
    shuffle: bool = True  # shuffle the corpus once, with `seed`
    # Tokenising the corpus (chat template + label mask) before training: rows per batch and the actor pool.
    # One tokenizer actor is enough next to training; a large corpus on a big cluster may want more.
    tokenize_batch_size: int = Field(64, ge=1)
    tokenize_concurrency: tuple[int, int] = (1, 1)  # (min, max) actors
    seed: int = 0
    max_failures: int = 1  # worker failures Ray Train recovers from (resuming at the last checkpoint)
    checkpoint_every_steps: int | None = None  # None = at each epoch end
    # Newest checkpoints kept on storage (Ray Train deletes older ones); None = all. The final checkpoint holds
    # only the training state (the student is in student/), so a finished run keeps keep_checkpoints - 1 full ones.
    keep_checkpoints: int | None = Field(1, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if self.global_batch_size % self.num_workers:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} must be a multiple of num_workers {self.num_workers}"
            )
        if self.pack_tokens is not None and self.pack_tokens < self.max_seq_len:
            raise ValueError(f"pack_tokens {self.pack_tokens} must be >= max_seq_len {self.max_seq_len}")
        if (self.offload_optimizer or self.offload_params) and not (self.use_gpu and self.strategy == "deepspeed"):
            raise ValueError("offload_optimizer/offload_params need strategy=deepspeed and use_gpu=true "
                             "(on CPU every state already lives in host memory)")
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params needs zero_stage=3")
        return self

    @property
    def packed_tokens(self) -> int:
        """Token budget of one packed row."""
        return self.pack_tokens or self.max_seq_len


class BenchmarkConfig(Section):
    """One evaluation set. `date_from` / `date_to` (ISO dates, inclusive) keep only the problems whose
    `meta.contest_date` falls in the window: LiveCodeBench's contamination control (v5 = 2024-08-01 ..
    2025-02-01) — problems released after the student's training data cannot have been seen."""

    name: str
    source: ProblemSource
    date_from: date | None = None
    date_to: date | None = None


class EvalConfig(Section):
    benchmarks: list[BenchmarkConfig] = Field(default_factory=list)
    k: int = Field(4, ge=1)  # samples per question: pass@1 averaged over k (avg@k)
    sampling: SamplingConfig | None = None  # None = the student's sampling
    # The engines' context for evaluation (prompt + sampling.max_tokens); None = rollout.max_model_len. Apart
    # from rollouts because the paper's evaluation budget (>= 32k tokens) is twice its 16k training limit.
    max_model_len: int | None = None

    @model_validator(mode="after")
    def _names_unique(self) -> "EvalConfig":
        names = [b.name for b in self.benchmarks]  # each is one row of eval.json and of the report
        if len(set(names)) != len(names):
            raise ValueError(f"benchmark names must be unique, got {names}")
        return self


class DiagnosticsConfig(Section):
    """The smoke test's §4 diagnostics (token entropy, PCA shift), run as a Ray task with these resources."""

    gpus: float = 0.0  # >0: on GPUs in bf16 (the 32B student is ~65 GB in bf16, twice that in fp32)
    cpus: float = 1.0
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"  # auto: bf16 on GPUs, fp32 on CPU
    max_responses: int = Field(64, ge=1)  # teacher responses scored per arm (the paper: millions of tokens)
    max_response_tokens: int | None = 256  # tokens scored per response; None = whole responses
    max_texts: int = Field(32, ge=2)  # benchmark texts for the PCA shift


class SmokeConfig(Section):
    questions: int = 10  # smoke questions per teacher (1 sample each)
    # The paper trains each smoke student on every response, unfiltered; True keeps only verified-correct ones.
    correct_only: bool = False
    train: TrainConfig | None = None  # smoke training budget; None = `train` with `epochs` epochs
    epochs: int = Field(1, ge=1)  # epochs of each smoke SFT when `train` is None (the paper: its full recipe)
    diagnostics: DiagnosticsConfig = Field(default_factory=DiagnosticsConfig)
    keep_students: bool = False  # keep each arm's student/ and checkpoints (else deleted once it is scored)
    serve_replicas: tuple[int, int] = (1, 1)  # (min, max) Serve replicas per teacher model (autoscaling)
    host: str = "127.0.0.1"  # Serve's HTTP bind address: loopback unless you mean to expose the teachers
    port: int = 8000
    # Teacher hosting: "auto" = ray.serve.llm when vLLM is installed (and no API key is asked), else the
    # transformers app (ded_ray.serve.hf_app).
    serve_engine: Literal["auto", "vllm", "hf"] = "auto"
    # Ray CPUs per Serve replica (per vLLM engine on the CPU build); it also sets the replica's threads
    # (rounded, >= 1). Below 1 by default: replicas hold their CPUs for the whole smoke test, and the Ray
    # Data tasks of the clients need a whole free CPU beside them on a 2-core machine.
    serve_cpus_per_replica: float = 0.5
    # >0: vLLM on GPUs, one GPU per tensor-parallel worker (ray.serve.llm's default bundles): set it to
    # serve_engine_kwargs.tensor_parallel_size for a model that needs several
    serve_gpus_per_replica: float = 0.0
    serve_api_key_env: str | None = None  # env var holding the key clients must send (Bearer); None = no auth
    serve_max_model_len: int | None = None  # None = the model's own
    serve_engine_kwargs: dict[str, Any] = Field(default_factory=dict)  # passed to vLLM untouched


class PreflightConfig(Section):
    """Throughput assumptions of `ded plan`'s time and GPU-hour estimate: stated, shown, never measured here."""

    rollout_tokens_per_s: float = Field(1500.0, gt=0)  # generated tokens/s per engine replica (all its sequences)
    # trained tokens/s per GPU: the paper trained 1,000 traces (~8.7k tokens) x 10 epochs in ~9 h on 8 H800s: ~335
    train_tokens_per_s_per_gpu: float = Field(335.0, gt=0)
    response_fill: float = Field(0.5, gt=0, le=1)  # mean response length as a share of max_tokens
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)  # vLLM's default, when engine_kwargs do not set it


# --- the whole pipeline --------------------------------------------------------------------------------


class DEDConfig(Section):
    run: RunConfig = Field(default_factory=RunConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    problems: ProblemsConfig = Field(default_factory=ProblemsConfig)
    teachers: list[TeacherConfig] = Field(default_factory=list)
    teacher: str = "auto"  # a teacher name, or "auto": the smoke test's winner
    student: StudentConfig = Field(default_factory=StudentConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    smoke: SmokeConfig = Field(default_factory=SmokeConfig)
    preflight: PreflightConfig = Field(default_factory=PreflightConfig)

    @model_validator(mode="after")
    def _teacher_known(self) -> "DEDConfig":
        names = [t.name for t in self.teachers]
        if len(set(names)) != len(names):
            raise ValueError(f"teacher names must be unique, got {names}")
        if self.teacher != "auto" and self.teacher not in names:
            raise ValueError(f"teacher {self.teacher!r} is not among the configured teachers {names}")
        return self

    def teacher_config(self, name: str) -> TeacherConfig:
        for teacher in self.teachers:
            if teacher.name == name:
                return teacher
        raise ConfigError(f"no teacher named {name!r}; configured: {[t.name for t in self.teachers]}")


# --- loading -------------------------------------------------------------------------------------------


def shipped_configs() -> list[Path]:
    """Every YAML shipped in ded_ray/configs (each is validated by a test)."""
    folder = resources.files("ded_ray") / "configs"
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_config_path(path: str | Path | None) -> Path:
    """A path as given, or the name of a shipped config ("demo.yaml", "ded-32b"), or the default."""
    if path is None:
        path = DEFAULT_CONFIG
    candidate = Path(path)
    if candidate.exists():
        return candidate
    shipped = {p.name: p for p in shipped_configs()}
    for name in (str(path), f"{path}.yaml"):
        if name in shipped:
            return shipped[name]
    raise ConfigError(
        f"config {str(path)!r} not found: give a YAML path or one of the shipped configs {sorted(shipped)}"
    )


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DEDConfig:
    """Load a YAML config (default: the embedded demo), apply `a.b=value` overrides, validate."""
    resolved = resolve_config_path(path)
    try:
        data = yaml.safe_load(resolved.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{resolved}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{resolved}: the top level must be a mapping, got {type(data).__name__}")
    for override in overrides or []:
        apply_override(data, override)
    return validate_config(data, origin=str(resolved))


def validate_config(data: dict[str, Any], origin: str = "<config>") -> DEDConfig:
    try:
        return DEDConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: invalid config\n{_explain(exc)}") from None


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one `a.b.c=value` override in place; the value is parsed as YAML ("3" -> 3, "[1,2]" -> list).

    A numeric path part indexes a list (`teachers.0.name=x`); the index one past the end appends.
    """
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like key.sub=value")
    dotted, raw = override.split("=", 1)
    keys = dotted.strip().split(".")
    if not all(keys):
        raise ConfigError(f"override {override!r} has an empty key")
    value = yaml.safe_load(raw) if raw.strip() else ""
    node: Any = data
    for i, key in enumerate(keys[:-1]):
        node = _child(node, key, create_dict=not keys[i + 1].isdigit(), where=".".join(keys[: i + 1]))
    last = keys[-1]
    if isinstance(node, list) and last.isdigit() and int(last) == len(node):
        node.append(value)  # `teachers.2=...` on a list of two adds a third
    elif isinstance(node, list):
        node[_list_index(node, last, dotted)] = value
    else:
        node[last] = value


def _child(node: Any, key: str, create_dict: bool, where: str) -> Any:
    if isinstance(node, list):
        return node[_list_index(node, key, where)]
    if not isinstance(node, dict):
        raise ConfigError(f"override path {where!r}: cannot descend into a {type(node).__name__}")
    if node.get(key) is None:
        node[key] = {} if create_dict else []
    return node[key]


def _list_index(node: list, key: str, where: str) -> int:
    if not key.isdigit() or int(key) >= len(node):
        raise ConfigError(f"override path {where!r}: index {key} is not in a list of {len(node)}")
    return int(key)


def _explain(exc: ValidationError) -> str:
    """One line per error; unknown keys also list the keys that are valid at that place."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "<top>"
        if err["type"] == "extra_forbidden":
            valid = _valid_keys(err["loc"][:-1])
            lines.append(f"  unknown key {where!r}; valid keys here: {', '.join(valid)}")
        else:
            lines.append(f"  {where}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def _valid_keys(loc: tuple) -> list[str]:
    """Field names of the model found by walking `loc` from DEDConfig (list indexes are skipped)."""
    model: Any = DEDConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            break
        model = _model_of(field.annotation)
    return sorted(model.model_fields) if hasattr(model, "model_fields") else []


def _model_of(annotation: Any) -> Any:
    """The BaseModel inside Optional[...] / list[...] / a plain annotation, else the annotation."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if isinstance(found, type) and issubclass(found, BaseModel):
            return found
    return annotation
