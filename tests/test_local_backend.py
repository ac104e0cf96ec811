"""The local Convex backend speaks Convex's HTTP API for the project's own functions."""

from __future__ import annotations

import json
import os
import subprocess
import time

import httpx

from devtools.processes import LocalConvex, start_local_convex
from prompts import build_full_prompt
from services.store.file import local_backend_id
from tests.conftest import DEMO_SEED, REPO, demo_agents


def post(convex: LocalConvex, route: str, body: object, key: str | None = None) -> httpx.Response:
    headers = {} if key is None else {"Authorization": f"Convex {key}"}
    return httpx.post(f"{convex.url}{route}", json=body, headers=headers, timeout=30)


def test_internal_functions_are_invisible_without_the_deploy_key(convex: LocalConvex) -> None:
    body = {"path": "agents:get", "args": {"agentId": local_backend_id(0)}, "format": "json"}
    anonymous = post(convex, "/api/query", body).json()
    assert anonymous["status"] == "error"
    assert "Could not find public function for 'agents:get'" in anonymous["errorMessage"]
    assert "value" not in anonymous
    user = httpx.post(f"{convex.url}/api/query", json=body, headers={"Authorization": "Bearer some.jwt"}).json()
    assert user["status"] == "error"
    wrong = post(convex, "/api/query", body, key="not-the-key")
    assert wrong.status_code == 401
    assert wrong.json()["code"] == "BadAdminKey"


def test_demo_agents_get_the_ids_the_embedded_store_assumes(convex: LocalConvex) -> None:
    listed = convex.call("query", "agents:list", {})
    assert [row["_id"] for row in listed] == [local_backend_id(i) for i in range(len(demo_agents()))]
    assert [row["name"] for row in listed] == [agent["name"] for agent in demo_agents()]


def test_run_route_and_both_formats_return_the_document(convex: LocalConvex) -> None:
    agent_id = local_backend_id(0)
    for fmt in ("json", "convex_encoded_json"):
        body = {"args": {"agentId": agent_id}, "format": fmt}
        answer = post(convex, "/api/run/agents/get", body, key=convex.deploy_key).json()
        assert answer["status"] == "success", answer
        assert answer["value"]["_id"] == agent_id
        assert answer["value"]["name"] == demo_agents()[0]["name"]
    bad = post(convex, "/api/run/agents/get", {"args": {"agentId": agent_id}, "format": "xml"}, key=convex.deploy_key)
    assert bad.status_code == 400
    assert bad.json()["code"] == "BadFormat"  # as Convex names it


def test_function_errors_carry_convex_error_data(convex: LocalConvex) -> None:
    body = {"path": "agents:update", "args": {"agentId": "nope", "name": "x"}, "format": "json"}
    answer = post(convex, "/api/mutation", body, key=convex.deploy_key)
    assert answer.status_code == 200
    assert answer.json()["status"] == "error"
    assert answer.json()["errorData"] == {
        "code": "AGENT_NOT_FOUND",
        "agentId": "nope",
        "message": "agent nope not found",
    }


def test_calling_a_query_as_a_mutation_and_malformed_bodies_are_refused(convex: LocalConvex) -> None:
    wrong_kind = post(convex, "/api/mutation", {"path": "agents:get", "args": {"agentId": "x"}}, key=convex.deploy_key)
    assert wrong_kind.json()["status"] == "error"
    assert "is not a mutation" in wrong_kind.json()["errorMessage"]
    not_json = httpx.post(f"{convex.url}/api/query", content=b"{oops", headers={"Authorization": "Convex x"})
    assert not_json.status_code == 400
    bad_args = post(convex, "/api/query", {"path": "agents:get", "args": {"agentId": 5}}, key=convex.deploy_key)
    assert bad_args.json()["status"] == "error"


def test_stats_count_requests_per_function_and_reset_restores_the_seed(convex: LocalConvex) -> None:
    convex.call("query", "agents:get", {"agentId": local_backend_id(1)})
    convex.call("query", "agents:get", {"agentId": local_backend_id(2)})
    new_id = convex.call(
        "mutation",
        "agents:create",
        {
            "organizationId": "o",
            "name": "N",
            "systemPrompt": "S",
            "config": {"domain": "general", "language": "en", "voice": "v", "model": "m"},
        },
    )
    assert convex.stats() == {"total": 3, "byPath": {"agents:create": 1, "agents:get": 2}}
    convex.reset()
    assert convex.stats() == {"total": 0, "byPath": {}}
    assert convex.call("query", "agents:get", {"agentId": new_id}) is not None  # counters only
    convex.reset(data=True)
    assert convex.call("query", "agents:get", {"agentId": new_id}) is None


def test_seeded_legacy_agent_has_no_prompt_and_the_others_have_the_builders(convex: LocalConvex) -> None:
    docs = [convex.call("query", "agents:get", {"agentId": local_backend_id(i)}) for i in range(len(demo_agents()))]
    legacy = [doc for doc in docs if "fullPrompt" not in doc]
    assert len(legacy) == 1
    for doc in docs:
        if "fullPrompt" in doc:
            assert doc["fullPrompt"] == build_full_prompt(doc)
    from prompts import load_templates

    assert {doc["config"]["domain"] for doc in docs} == set(load_templates()["domains"])


def test_migration_over_http_rebuilds_the_legacy_agent(convex: LocalConvex) -> None:
    result = convex.call("action", "agents:rebuildAllPrompts", {})
    assert result == {
        "success": True,
        "total": 4,
        "rebuilt": 1,
        "skipped": 3,
        "failed": 0,
        "message": "Rebuilt 1 prompts, skipped 3 agents that already had current prompts",
    }


def test_latency_flag_delays_every_api_answer() -> None:
    slow = start_local_convex(latency_ms=150)
    try:
        started = time.perf_counter()
        slow.call("query", "agents:list", {})
        assert time.perf_counter() - started >= 0.15
    finally:
        slow.stop()


def test_relative_seed_path_is_resolved_from_the_callers_directory() -> None:
    seed_dir = REPO / "convex" / "seed"
    process = subprocess.Popen(
        ["npm", "--prefix", "..", "run", "--silent", "local", "--", "--port", "0", "--seed", "demo-agents.json"],
        cwd=seed_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("ready http://127.0.0.1:"), line
        url = line.split()[1]
        key = os.environ.get("CONVEX_DEPLOY_KEY", "local-dev-deploy-key")
        listed = httpx.post(
            f"{url}/api/query", json={"path": "agents:list", "args": {}}, headers={"Authorization": f"Convex {key}"}
        )
        assert len(listed.json()["value"]) == len(demo_agents())
    finally:
        os.killpg(process.pid, 15)
        process.wait(10)


def test_a_seed_with_system_fields_is_refused(tmp_path: object) -> None:
    import json
    from pathlib import Path

    seed = Path(str(tmp_path)) / "bad.json"
    seed.write_text(json.dumps({"agents": [{**demo_agents()[0], "_id": "x"}]}))
    result = subprocess.run(
        ["npm", "--prefix", "convex", "run", "--silent", "local", "--", "--port", "0", "--seed", str(seed)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "system field" in result.stdout + result.stderr
    assert DEMO_SEED.exists()


def test_values_are_written_with_the_real_backends_number_format_and_key_order(convex: LocalConvex) -> None:
    agent_id = local_backend_id(0)
    updated_at = int(convex.call("query", "agents:get", {"agentId": agent_id})["updatedAt"])
    for fmt in ("json", "convex_encoded_json"):
        body = {"path": "agents:get", "args": {"agentId": agent_id}, "format": fmt}
        text = post(convex, "/api/query", body, key=convex.deploy_key).text
        assert f'"updatedAt":{updated_at}.0' in text, text[:300]
        assert text.startswith('{"status":"success","value":{"_creationTime":'), text[:120]
        assert "logLines" not in text  # Convex omits an empty list
        value = json.loads(text)["value"]
        assert list(value) == sorted(value)
        assert list(value["config"]) == sorted(value["config"])
    created = convex.call(
        "mutation",
        "agents:create",
        {"organizationId": "o", "name": "N", "systemPrompt": "S", "config": demo_agents()[0]["config"]},
    )
    error = {"path": "agents:update", "args": {"agentId": created, "name": "n" * 201}, "format": "convex_encoded_json"}
    failed = post(convex, "/api/mutation", error, key=convex.deploy_key).text
    assert '"actual":201.0' in failed
    assert '"limit":200.0' in failed
    assert failed.startswith('{"status":"error","errorMessage":')


def test_local_routes_require_the_deploy_key(convex: LocalConvex) -> None:
    for method, route in (("GET", "/_local/stats"), ("POST", "/_local/reset?data=1")):
        anonymous = httpx.request(method, f"{convex.url}{route}", timeout=30)
        assert anonymous.status_code == 401, (route, anonymous.text)
        wrong = httpx.request(method, f"{convex.url}{route}", headers={"Authorization": "Convex nope"}, timeout=30)
        assert wrong.status_code == 401
    assert convex.stats()["total"] == 0  # the deploy key still works (LocalConvex sends it)


def _run_local(host: str, env: dict[str, str]) -> tuple[int | None, str]:
    """Start the backend on ``host``; return (exit code or None if it came up, first output line)."""
    process = subprocess.Popen(
        ["npm", "--prefix", "convex", "run", "--silent", "local", "--", "--port", "0", "--host", host],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        return (None if line.startswith("ready ") else process.wait(30)), line
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 15)
            process.wait(10)


def test_a_non_loopback_host_is_refused_unless_a_key_of_its_own_is_given() -> None:
    base = {k: v for k, v in os.environ.items() if k != "CONVEX_DEPLOY_KEY"}
    code, line = _run_local("0.0.0.0", base)
    assert code == 2, line
    assert "CONVEX_DEPLOY_KEY" in line
    code, line = _run_local("0.0.0.0", {**base, "CONVEX_DEPLOY_KEY": "local-dev-deploy-key"})
    assert code == 2, line
    code, line = _run_local("0.0.0.0", {**base, "CONVEX_DEPLOY_KEY": "a-key-of-its-own"})
    assert code is None, line
    code, line = _run_local("127.0.0.1", base)
    assert code is None, line
