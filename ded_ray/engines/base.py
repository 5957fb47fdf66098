"""The one interface every rollout engine implements.

An engine turns a Ray Dataset of prompt rows into the same rows with the generation columns added. Rows
arrive already fanned out (one row per problem × teacher × sample_idx, each with its own `seed`) and
already prompted:
- `prompt`: the chat rendered to text with the model's chat template (hf and vllm generate from it);
- `prompt_messages`: the same chat as a JSON list of {role, content} (the openai engine sends it).

Each engine adds `response`, `num_tokens` (counted with the model's tokenizer), `finish_reason`
("stop" | "length" | "error"), `token_entropy` (mean bits per token, null when the engine has no logprobs)
and `error` (null, or a short reason slug such as `prompt_too_long`, `http_400`, `engine_error` —
the runner routes such rows to rejected/rollout/<reason>). A failing row never fails the job.
"""

from __future__ import annotations

from typing import Protocol

import ray.data

from ded_ray.config import RolloutConfig, SamplingConfig

PROMPT_MESSAGES = "prompt_messages"


class RolloutEngine(Protocol):
    name: str

    def generate(
        self,
        ds: ray.data.Dataset,
        model: str,
        sampling: SamplingConfig,
        config: RolloutConfig,
        *,
        endpoint: str | None = None,
        api_key_env: str | None = None,
    ) -> ray.data.Dataset:
        """Lazily add the generation columns to `ds`.

        `model` is a model folder or name that each hf actor resolves on its own node (`models.model_ref`),
        vLLM's model source (`models.vllm_source`), or the served model id (openai, with `endpoint` the
        base URL ending in /v1 and the API key read from the environment variable `api_key_env`).
        """
        ...
