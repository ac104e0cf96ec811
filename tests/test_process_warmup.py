"""What PROCESS-mode job processes inherit from livekit-agents' forkserver: the job module
and the TLS contexts, built once per worker instead of once per call."""

from __future__ import annotations

import json
import subprocess
import sys

from agent.settings import WorkerSettings
from agent.worker import build_server
from tests.conftest import REPO

PROBE = """
import json, sys
import agent.process_warmup
from livekit.agents.utils import http_context
from services.tls import client_ssl_context
from services import metrics
print(json.dumps({
    "jobModule": "agent.worker" in sys.modules,
    "serviceTls": client_ssl_context.cache_info().currsize,
    "livekitTls": http_context._ssl_context_for.cache_info().currsize,
    "hostMetric": metrics.resolve_histogram.cache_info().currsize,
}))
"""


def test_importing_the_warmup_loads_the_job_module_and_builds_each_tls_context_once() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, check=True, timeout=120
    )
    built = json.loads(out.stdout.strip().splitlines()[-1])
    assert built == {"jobModule": True, "serviceTls": 1, "livekitTls": 1, "hostMetric": 5}


def test_the_service_http_client_uses_the_shared_tls_context() -> None:
    from services.convex_client import ConvexHttpClient
    from services.tls import client_ssl_context

    client = ConvexHttpClient("https://example.invalid", "key", timeout_seconds=1)
    pool = client._client._transport._pool  # type: ignore[attr-defined]  # httpx internals, pinned
    assert pool._ssl_context is client_ssl_context()


def test_the_process_executor_preloads_the_warmup_in_its_forkserver() -> None:
    settings = WorkerSettings.model_validate(
        {
            "LIVEKIT_URL": "ws://127.0.0.1:9",
            "LIVEKIT_API_KEY": "devkey",
            "LIVEKIT_API_SECRET": "secret",
            "AGENT_EXECUTOR": "process",
        }
    )
    server = build_server(settings, http_port=0)
    assert server._preload_modules == ["agent.process_warmup"]  # livekit-agents 1.8.9, pinned
