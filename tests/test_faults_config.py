"""Misconfiguration and sick dependencies: a malformed Redis URL or a deploy key bound for
plain http:// stops the worker at start (status 2, naming the variable, never echoing a
secret); a refused deploy key is told apart from an outage; a hung Redis costs a join
no more than the Redis operation timeout."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError
from structlog.testing import capture_logs

from devtools.processes import LocalConvex
from services import AgentConfigService, ConfigUnavailableError
from services.errors import StoreAuthError
from services.store.factory import default_store_factory
from services.store.file import local_backend_id
from tests.conftest import DEMO_SEED, REPO, project_free_env
from tests.helpers import poll_versions, settings_for

PRIYA = local_backend_id(0)
WORKER = {
    "LIVEKIT_URL": "ws://127.0.0.1:9",
    "LIVEKIT_API_KEY": "devkey",
    "LIVEKIT_API_SECRET": "secret",
    "AGENT_MODEL_FACTORY": "devtools.fake_models:fake_session",
    "AGENTS_FILE": str(DEMO_SEED),
}
PASSWORD = "hunter2-sekrit"


def run_worker(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "start"],
        cwd=REPO,
        env={**project_free_env(), **WORKER, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{PASSWORD}@h:abc",
        f"redis://:{PASSWORD}@h:70000/0",
        f"redis://:{PASSWORD}@h:6379/zero",
        f"redis://:{PASSWORD}@:6379/0",
        "http://h:6379/0",
    ],
)
def test_a_malformed_redis_url_is_refused_naming_the_variable_never_the_password(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        settings_for(None, PROMPT_CACHE_REDIS_URL=url)
    message = "; ".join(str(err["msg"]) for err in info.value.errors())
    assert "PROMPT_CACHE_REDIS_URL" in message
    assert PASSWORD not in message


def test_the_worker_exits_2_at_start_on_a_redis_url_with_a_bad_port() -> None:
    result = run_worker({"PROMPT_CACHE_REDIS_URL": f"redis://:{PASSWORD}@h:abc"})
    assert result.returncode == 2
    assert "PROMPT_CACHE_REDIS_URL" in result.stderr
    assert PASSWORD not in result.stderr + result.stdout


def test_the_redis_url_is_a_secret_in_the_settings() -> None:
    settings = settings_for(None, PROMPT_CACHE_REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:6379/0")
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.model_dump())


@pytest.mark.parametrize("url", ["http://convex.example.com", "http://10.0.0.5:3210", "http://[2001:db8::1]:3210"])
def test_the_deploy_key_is_refused_over_plain_http_to_a_remote_host(url: str) -> None:
    with pytest.raises(ValidationError, match="clear text"):
        settings_for(None, CONVEX_URL=url, CONVEX_DEPLOY_KEY="k")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:3210", "http://localhost:3210", "http://[::1]:3210", "https://convex.example.com"]
)
def test_loopback_http_and_any_https_are_accepted(url: str) -> None:
    assert settings_for(None, CONVEX_URL=url, CONVEX_DEPLOY_KEY="k").convex_url == url


def test_the_worker_exits_2_at_start_on_a_deploy_key_over_remote_http() -> None:
    result = run_worker({"CONVEX_URL": "http://convex.example.com", "CONVEX_DEPLOY_KEY": "k"})
    assert result.returncode == 2
    assert "CONVEX_URL" in result.stderr


def _errors(kind: str) -> float:
    sample = REGISTRY.get_sample_value("agent_store_errors_total", {"operation": "get_agent", "kind": kind})
    return sample or 0.0


async def test_a_refused_deploy_key_is_logged_and_counted_apart_from_an_outage(convex: LocalConvex) -> None:
    settings = settings_for(convex, CONVEX_DEPLOY_KEY="not-the-key", PROMPT_REFRESH_SECONDS=3600)
    service = AgentConfigService(settings, store_factory=default_store_factory(settings), run_refresher=True)
    unauthorized, unavailable = _errors("unauthorized"), _errors("unavailable")
    try:
        with capture_logs() as logs, pytest.raises(ConfigUnavailableError):
            await service.get_full_prompt(PRIYA)
        with pytest.raises(StoreAuthError):
            await poll_versions(service)
    finally:
        await service.aclose()
    assert [entry["event"] for entry in logs if entry["event"] == "store_unauthorized"] == ["store_unauthorized"]
    assert _errors("unauthorized") == unauthorized + 1
    assert _errors("unavailable") == unavailable
    assert all("not-the-key" not in str(entry) for entry in logs)


async def test_a_hung_redis_costs_a_join_at_most_the_redis_operation_timeout(
    convex: LocalConvex, hanging_port: int
) -> None:
    from services.tiers.redis import RedisTier

    url = f"redis://:{PASSWORD}@127.0.0.1:{hanging_port}/0"
    settings = settings_for(convex, PROMPT_CACHE_REDIS_URL=url)
    service = AgentConfigService(settings, store_factory=default_store_factory(settings), run_refresher=False)
    defaults = RedisTier.__init__.__kwdefaults__ or {}
    op_timeout = float(defaults["op_timeout_seconds"])
    try:
        with capture_logs() as logs:
            started = time.monotonic()
            first = await service.get_full_prompt(PRIYA)
            elapsed = time.monotonic() - started
    finally:
        await service.aclose()
    assert first.source == "db"
    # One Redis timeout, then the tier rests: the store read and the write-back skip it.
    # (slack for a shared, busy machine; a hang without the timeout would never return)
    assert elapsed < op_timeout + 2.0
    assert [entry["operation"] for entry in logs if entry["event"] == "redis_tier_unavailable"] == ["get_version"]
    assert all(PASSWORD not in str(entry) for entry in logs)
