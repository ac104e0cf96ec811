"""What PROCESS-mode job processes inherit from livekit-agents' forkserver: the job module
and the TLS contexts, built once per worker instead of once per call."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agent.server import build_server
from agent.settings import WorkerSettings
from tests.conftest import DEMO_SEED, REPO, project_free_env

PROBE = """
import json, sys
import agent.prewarm.forkserver
from livekit.agents import llm
from livekit.agents.utils import http_context
from services.tls import client_ssl_context
from services import metrics
print(json.dumps({
    "jobModule": "agent.job" in sys.modules,
    "serviceTls": client_ssl_context.cache_info().currsize,
    "livekitTls": http_context._ssl_context_for.cache_info().currsize,
    "hostMetric": metrics.resolve_histogram.cache_info().currsize,
    "lazyModules": [m for m in ("livekit.agents.llm.async_toolset", "livekit.agents.voice.report") if m in sys.modules],
    "chatValidatorBuilt": llm.ChatMessage.__pydantic_complete__,
    "factoryModule": "devtools.fake_models" in sys.modules,
}))
"""


def warm_up(model_factory: str) -> dict[str, object]:
    """Import the warm-up in a fresh interpreter, as the forkserver does, and report what it built."""
    env = {**project_free_env(), "AGENT_MODEL_FACTORY": model_factory}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, check=True, timeout=120
    )
    built: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return built


@pytest.fixture(scope="module")
def warmed() -> dict[str, object]:
    """What the warm-up built with a factory that loads (one fresh interpreter for the module)."""
    return warm_up("devtools.fake_models:recording_session")


def test_importing_the_warmup_loads_the_job_module_and_builds_each_tls_context_once(warmed: dict[str, object]) -> None:
    assert {key: warmed[key] for key in ("jobModule", "serviceTls", "livekitTls", "hostMetric")} == {
        "jobModule": True,
        "serviceTls": 1,
        "livekitTls": 1,
        "hostMetric": 5,
    }


def test_the_warmup_loads_what_livekit_agents_would_load_lazily_in_every_job(warmed: dict[str, object]) -> None:
    assert warmed["lazyModules"] == ["livekit.agents.llm.async_toolset", "livekit.agents.voice.report"]
    assert warmed["chatValidatorBuilt"] is True  # pydantic defers it to the first ChatMessage
    assert warmed["factoryModule"] is True  # the session factory AGENT_MODEL_FACTORY names


def test_a_factory_that_cannot_load_leaves_the_warmup_working() -> None:
    built = warm_up("no_such_module:nothing")  # the job reports it; the forkserver must still start
    assert built["jobModule"] is True and built["factoryModule"] is False


def test_the_service_http_client_uses_the_shared_tls_context() -> None:
    from services.store.convex_client import ConvexHttpClient
    from services.tls import client_ssl_context

    client = ConvexHttpClient("https://example.invalid", "key", timeout_seconds=1)
    pool = client._client._transport._pool  # type: ignore[attr-defined]  # httpx internals, pinned
    assert pool._ssl_context is client_ssl_context()


def test_the_process_executor_preloads_the_warmup_in_its_forkserver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTS_FILE", str(DEMO_SEED))  # the embedded store has no default file
    settings = WorkerSettings.model_validate(
        {
            "LIVEKIT_URL": "ws://127.0.0.1:9",
            "LIVEKIT_API_KEY": "devkey",
            "LIVEKIT_API_SECRET": "secret",
            "AGENT_EXECUTOR": "process",
        }
    )
    server = build_server(settings, http_port=0)
    assert server._preload_modules == ["agent.prewarm.forkserver"]  # livekit-agents 1.8.9, pinned
