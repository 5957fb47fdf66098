"""Optional LLM-as-judge for math answers that math-verify calls `wrong` or cannot read (off by default).

The paper falls back to an LLM judge where rule-based checking fails. `LLMJudge` asks any OpenAI-compatible
`/chat/completions` endpoint whether a final answer matches the reference; the reply must start with YES or
NO. Anything else (HTTP failure, an unclear reply) returns `None`, and the caller keeps math-verify's
verdict: the judge can only add evidence, never turn "could not verify" into "wrong".
"""

from __future__ import annotations

import os

from ded_ray.verifiers.verdict import CORRECT, WRONG, Verdict

PROMPT = (
    "You are grading a math answer. Reply with exactly one word: YES if the student's final answer is "
    "mathematically equivalent to the reference answer, NO otherwise.\n\n"
    "Question:\n{question}\n\nReference answer:\n{gold}\n\nStudent's final answer:\n{answer}\n"
)
MAX_ANSWER_CHARS = 2000  # the judge sees the end of the response when no answer could be extracted


class LLMJudge:
    """`endpoint` is the base URL (…/v1); the API key, if any, is read from `api_key_env`."""

    def __init__(self, endpoint: str, model: str | None = None, api_key_env: str | None = None,
                 timeout_s: float = 30.0) -> None:
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - httpx ships with the base install
            raise ImportError("the LLM judge needs httpx: pip install httpx") from exc
        headers = {}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ValueError(f"judge api_key_env={api_key_env!r} is not set in the environment")
            headers["Authorization"] = f"Bearer {key}"
        self.model = model or "default"
        self._client = httpx.Client(base_url=endpoint.rstrip("/"), headers=headers, timeout=timeout_s)

    def judge(self, question: str, answer: str, gold: str) -> Verdict | None:
        """`correct`/`wrong` from the judge, or None when it gave no usable reply."""
        import httpx

        body = {
            "model": self.model,
            "temperature": 0.0,
            "max_tokens": 4,
            "messages": [{"role": "user", "content": PROMPT.format(
                question=question or "(not given)", gold=gold, answer=answer[-MAX_ANSWER_CHARS:])}],
        }
        try:
            response = self._client.post("/chat/completions", json=body)
            response.raise_for_status()
            reply = response.json()["choices"][0]["message"]["content"].strip().upper()
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError):
            return None
        if reply.startswith("YES"):
            return Verdict(CORRECT, f"llm-judge ({self.model}): YES", answer[:MAX_ANSWER_CHARS])
        if reply.startswith("NO"):
            return Verdict(WRONG, f"llm-judge ({self.model}): NO", answer[:MAX_ANSWER_CHARS])
        return None

    def close(self) -> None:
        self._client.close()
