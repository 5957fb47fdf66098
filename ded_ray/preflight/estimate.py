"""A rough time and GPU-hour estimate of a run, from stated throughput assumptions (`config.preflight`).

Generated tokens = questions x samples x max_tokens x `response_fill`, at `rollout_tokens_per_s` per replica
with the pool at its largest; trained tokens = corpus rows x (prompt + filled response) x epochs at
`train_tokens_per_s_per_gpu`. The corpus is taken at its largest (P per question, capped by the mix quotas),
the pass rate over every question: an upper bound, not a forecast.
"""

from __future__ import annotations

from dataclasses import dataclass

from ded_ray.config import DEDConfig
from ded_ray.preflight.demands import EngineDemand


@dataclass(frozen=True)
class StageEstimate:
    stage: str
    tokens: float
    hours: float
    gpu_hours: float

    def __str__(self) -> str:
        return f"{self.stage:<28} {tokens_text(self.tokens):>8} tokens {hours_text(self.hours):>8} {self.gpu_hours:9.1f} GPU-h"


def tokens_text(tokens: float) -> str:
    return f"{tokens / 1e6:.1f}M" if tokens >= 1e5 else f"{tokens / 1e3:.1f}k"


def hours_text(hours: float) -> str:
    return f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"


def engine_estimate(d: EngineDemand, config: DEDConfig, questions: int, models: int = 1) -> StageEstimate:
    tokens = questions * d.samples * d.max_tokens * config.preflight.response_fill * models
    replicas = max(1, d.replicas[1])
    hours = tokens / (config.preflight.rollout_tokens_per_s * replicas) / 3600
    return StageEstimate(d.stage, tokens, hours, hours * replicas * d.gpus)


def train_estimate(stage: str, config: DEDConfig, rows: int, prompt_tokens: float, response_tokens: int,
                   epochs: int) -> StageEstimate:
    t = config.train
    tokens = rows * (prompt_tokens + response_tokens * config.preflight.response_fill) * epochs
    workers = t.num_workers
    hours = tokens / (config.preflight.train_tokens_per_s_per_gpu * workers) / 3600
    return StageEstimate(stage, tokens, hours, hours * workers if t.use_gpu else 0.0)


def corpus_rows(config: DEDConfig, questions: int) -> int:
    rows = questions * config.curate.diversity.per_question
    quotas = config.curate.mix.quotas
    return min(rows, sum(quotas.values())) if quotas else rows


def assumptions(config: DEDConfig) -> str:
    p = config.preflight
    return (f"assumed (preflight.*): {p.rollout_tokens_per_s:g} generated tokens/s per replica, "
            f"{p.train_tokens_per_s_per_gpu:g} trained tokens/s per GPU, responses fill {p.response_fill:.0%} of max_tokens")
