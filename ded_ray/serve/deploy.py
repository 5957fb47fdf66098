"""Host candidate teachers on Ray Serve: `serve_teachers(teachers, smoke) -> {teacher name: base URL}`.

All local teachers go into one Serve application ("ded-teachers") on `smoke.host:smoke.port`
(127.0.0.1 unless configured): ray.serve.llm + vLLM when vLLM is installed (`serve_vllm_app`), else the
transformers app (`serve_hf_app`). The served model id of a teacher is its `model` string as configured
(`served_model_id`), so teachers that differ only by system prompt or sampling share one deployment:
the system prompt is applied by the client's prompt stage and sampling is sent with each request. Point
the `openai` engine at `(base URL, served_model_id(teacher))`.

Teachers with an `endpoint` (any OpenAI-compatible URL) are not hosted: their URL is returned as is.
`shutdown_teachers()` removes the application (and Serve, if `stop_serve`).
"""

from __future__ import annotations

import logging
import time
from typing import Literal

from ded_ray.config import SmokeConfig, TeacherConfig
from ded_ray.engines.openai import read_api_key
from ded_ray.models import ensure_available, model_ref, vllm_source
from ded_ray.vllm_env import vllm_installed

log = logging.getLogger(__name__)

APP_NAME = "ded-teachers"
READY_TIMEOUT_S = 900.0  # model load + (vLLM) engine start on a busy 2-core machine


def served_model_id(teacher: TeacherConfig) -> str:
    """The `model` a client sends for this teacher: its configured model string."""
    if teacher.model is None:
        raise ValueError(f"teacher {teacher.name!r} has no `model` to serve (it has endpoint {teacher.endpoint!r})")
    return teacher.model


def choose_backend(smoke: SmokeConfig) -> Literal["vllm", "hf"]:
    """`smoke.serve_engine`, with "auto" = vllm when installed, else hf.

    ray.serve.llm has no API-key check of its own, so "auto" with `serve_api_key_env` set picks hf.
    """
    if smoke.serve_engine == "vllm":
        if smoke.serve_api_key_env:
            raise ValueError("serve_engine=vllm cannot check an API key (serve_api_key_env): use serve_engine=hf or auto")
        return "vllm"
    if smoke.serve_engine == "hf":
        return "hf"
    if smoke.serve_api_key_env:
        log.info("serve: an API key is configured; hosting teachers with the transformers app (ray.serve.llm has no key check)")
        return "hf"
    return "vllm" if vllm_installed() else "hf"


def base_url(smoke: SmokeConfig) -> str:
    """The /v1 base URL clients use (a wildcard bind address is reached through loopback)."""
    host = "127.0.0.1" if smoke.host in ("0.0.0.0", "::", "") else smoke.host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{smoke.port}/v1"


def model_source(model: str, backend: Literal["vllm", "hf"]) -> str:
    """How a replica is told its model: vLLM's model source, or a name the hf replica resolves on its node.

    Checked here either way, so a missing model fails before any replica starts.
    """
    if backend == "vllm":
        return vllm_source(model)
    ensure_available(model)
    return model_ref(model)


def build_app(models: dict[str, str], smoke: SmokeConfig, backend: Literal["vllm", "hf"]):
    """The Serve application for `models` (served model id -> `model_source`) on `backend`."""
    if backend == "vllm":
        from ded_ray.serve.vllm_app import build_vllm_app

        return build_vllm_app(
            models,
            replicas=smoke.serve_replicas,
            cpus_per_replica=smoke.serve_cpus_per_replica,
            gpus_per_replica=smoke.serve_gpus_per_replica,
            max_model_len=smoke.serve_max_model_len,
            engine_kwargs=smoke.serve_engine_kwargs,
        )
    from ded_ray.serve.hf_app import build_hf_app

    return build_hf_app(
        models,
        replicas=smoke.serve_replicas,
        cpus_per_replica=smoke.serve_cpus_per_replica,
        api_key=read_api_key(smoke.serve_api_key_env),
        max_model_len=smoke.serve_max_model_len,
    )


def serve_teachers(teachers: list[TeacherConfig], smoke: SmokeConfig) -> dict[str, str]:
    """Deploy every local teacher on Serve (one app) and wait until each model answers; {name: base URL}.

    Needs a running Ray (`ray.init`). Raises ModelNotFoundError for a model that is not available
    offline, TimeoutError when the app does not come up within READY_TIMEOUT_S.
    """
    urls = {t.name: t.endpoint for t in teachers if t.endpoint}
    local = [t for t in teachers if not t.endpoint]
    if not local:
        return urls
    backend = choose_backend(smoke)
    models: dict[str, str] = {}
    for teacher in local:
        models.setdefault(served_model_id(teacher), model_source(teacher.model, backend))
    from ray import serve

    # Serve's driver-side logger narrates each app step at INFO ("Started Serve", "… is ready at", "Deleting
    # app") between our own stage lines; our log line below says what is hosted where. Warnings still show.
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    serve.start(http_options={"host": smoke.host, "port": smoke.port})
    log.info("serve: hosting %s with %s on %s", sorted(models), backend, base_url(smoke))
    serve.run(build_app(models, smoke, backend), name=APP_NAME, route_prefix="/")
    wait_until_served(base_url(smoke), list(models), smoke.serve_api_key_env)
    urls.update({t.name: base_url(smoke) for t in local})
    return urls


def wait_until_served(url: str, model_ids: list[str], api_key_env: str | None = None,
                      timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll `<url>/models` until every id is listed (Serve reports RUNNING before the proxy routes)."""
    import httpx

    key = read_api_key(api_key_env)
    headers = {"Authorization": f"Bearer {key.get()}"} if key is not None else {}
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/models", headers=headers, timeout=10.0)
            if response.status_code == 200:
                listed = {m.get("id") for m in response.json().get("data", [])}
                if set(model_ids) <= listed:
                    return
                last = f"listed {sorted(listed)}"
            else:
                last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(1.0)
    raise TimeoutError(f"serve: {url} did not list {model_ids} within {timeout_s:.0f}s (last: {last})")


def shutdown_teachers(stop_serve: bool = False) -> None:
    """Delete the teachers' application; with `stop_serve`, shut Serve down too (its proxy and controller)."""
    from ray import serve

    try:
        serve.delete(APP_NAME)
    except Exception as exc:  # noqa: BLE001 - nothing deployed (or Serve already gone) is fine on teardown
        log.debug("serve: delete %s: %s", APP_NAME, exc)
    if stop_serve:
        serve.shutdown()
