"""Fleet simulator: Convex load and edit propagation across N worker hosts.

    .venv/bin/python -m bench.fleet --hosts N --seconds S --edits-per-minute E [--redis] \\
        [--kill-leader-at T] [--refresh 2] [--resolve-interval 0.2] --json FILE

Starts the local Convex backend (demo seed) and, with ``--redis``, a real redis-server;
runs N processes of ``bench.fleet_host`` (each the worker's main-process service with
its refresher, no LiveKit) that resolve every demo agent's prompt each
``--resolve-interval``; edits agents in Convex at ``E`` per minute (each edit tags the
prompt ``[edit <agent> <n>]``), optionally SIGKILLs the fleet's leader at ``T`` seconds,
and reports, next to the baseline of the same run:

- ``changed_since_per_minute`` and ``get_per_minute`` (the backend's per-function
  counts over the run): with Redis one poller per fleet, so the target is
  1.2 x 60 / refresh whatever N; without Redis every host polls, N x 60 / refresh;
- edit visible on every host: p50 / p95 / max ms from the edit's commit to the last
  host serving it (the hosts resolve every ``--resolve-interval``, which bounds the
  precision), and ``edits_lost`` (never served by some surviving host);
- edit spread: p50 / p95 / max ms from the first host serving an edit to the last (with
  Redis, the push from the leader to its followers);
- ``wrong_prompts``: answers whose tag does not belong to the version they claim, or
  fresh answers older than one the same host already served;
- ``takeover_gap_ms``: from the SIGKILL to another host holding the lease.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadtest.report import percentile
from devtools.processes import DEMO_SEED, REPO, LocalConvex, RedisServer, start_local_convex, start_redis
from services.store.file import local_backend_id

Event = dict[str, Any]


@dataclass
class HostProcess:
    """One ``bench.fleet_host`` child; its stdout events land in ``events`` (and in
    ``inbox``, shared by all hosts, as ``(index, event)``)."""

    index: int
    process: subprocess.Popen[str]
    inbox: queue.Queue[tuple[int, Event]]
    events: list[Event] = field(default_factory=list)

    @classmethod
    def start(
        cls, index: int, env: dict[str, str], agents: list[str], interval: float, inbox: queue.Queue[tuple[int, Event]]
    ) -> HostProcess:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.fleet_host",
                "--agents",
                ",".join(agents),
                "--resolve-interval",
                str(interval),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        host = cls(index, process, inbox)
        threading.Thread(target=host._pump, name=f"fleet-host-{index}", daemon=True).start()
        return host

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.events.append(event)
            self.inbox.put((self.index, event))

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait(10)

    def stop(self, timeout: float = 15) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


def host_env(convex: LocalConvex, redis: RedisServer | None, refresh: float) -> dict[str, str]:
    """This environment less the project's own settings, plus the fleet's."""
    ours = ("LIVEKIT_", "CONVEX_", "PROMPT_", "AGENT", "OPENAI_", "PROBE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)} | {
        "CONVEX_URL": convex.url,
        "CONVEX_DEPLOY_KEY": convex.deploy_key,
        "PROMPT_REFRESH_SECONDS": str(refresh),
    }
    if redis is not None:
        env["PROMPT_CACHE_REDIS_URL"] = redis.url
    return env


def wait_for(inbox: queue.Queue[tuple[int, Event]], predicate: Any, timeout: float) -> tuple[int, Event]:
    """The first inbox item matching ``predicate``; raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no matching event from the hosts")
        try:
            item = inbox.get(timeout=remaining)
        except queue.Empty:
            continue
        if predicate(*item):
            return item


@dataclass(frozen=True)
class Edit:
    agent_id: str
    seq: int
    updated_at: float
    at: float  # wall clock when the mutation returned (committed)


def current_leader(hosts: list[HostProcess]) -> HostProcess | None:
    for host in hosts:
        roles = [e["role"] for e in host.events if e["ev"] == "role"]
        if host.alive and roles and roles[-1] == "leader":
            return host
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    seeded = json.loads(DEMO_SEED.read_text(encoding="utf-8"))["agents"]
    agents = [local_backend_id(i) for i in range(len(seeded))]
    convex = start_local_convex(seed=DEMO_SEED)
    redis = start_redis() if args.redis else None
    hosts: list[HostProcess] = []
    try:
        inbox: queue.Queue[tuple[int, Event]] = queue.Queue()
        env = host_env(convex, redis, args.refresh)
        hosts = [HostProcess.start(i, env, agents, args.resolve_interval, inbox) for i in range(args.hosts)]
        ready: set[int] = set()
        while len(ready) < len(hosts):
            index, _ = wait_for(inbox, lambda _i, e: e["ev"] == "ready", timeout=180)
            ready.add(index)
        print(f"{len(hosts)} hosts ready", file=sys.stderr)
        before = convex.stats()["byPath"]
        started = time.time()
        edits, killed = edit_and_kill(args, convex, agents, hosts, started)
        # Let the last edits propagate (bounded: refresh + a few seconds), then count.
        settle_deadline = time.time() + args.refresh * 3 + 5
        survivors = [h for h in hosts if h.alive]
        while time.time() < settle_deadline and not all(_seen_everywhere(e, survivors) for e in edits):
            time.sleep(0.1)
        after = convex.stats()["byPath"]
        elapsed_min = (time.time() - started) / 60.0
    finally:
        for host in hosts:
            host.stop()
        if redis is not None:
            redis.stop()
        convex.stop()

    return report(args, hosts, edits, killed, before, after, elapsed_min)


def edit_and_kill(
    args: argparse.Namespace, convex: LocalConvex, agents: list[str], hosts: list[HostProcess], started: float
) -> tuple[list[Edit], tuple[HostProcess, float] | None]:
    """Edit agents round-robin at ``--edits-per-minute`` for ``--seconds``; SIGKILL the
    leader at ``--kill-leader-at``. Returns the edits and (killed host, when)."""
    base = {a: convex.call("query", "agents:get", {"agentId": a})["systemPrompt"] for a in agents}
    edits: list[Edit] = []
    killed: tuple[HostProcess, float] | None = None
    period = 60.0 / args.edits_per_minute if args.edits_per_minute > 0 else float("inf")
    next_edit = started + period / 2
    end = started + args.seconds
    seq = 0
    while time.time() < end:
        now = time.time()
        if killed is None and args.kill_leader_at is not None and now - started >= args.kill_leader_at:
            leader = current_leader(hosts)
            if leader is not None:
                leader.kill()
                killed = (leader, time.time())
                print(f"killed leader host {leader.index}", file=sys.stderr)
        if now >= next_edit:
            agent_id = agents[seq % len(agents)]
            seq += 1
            text = f"{base[agent_id]} [edit {agent_id} {seq}]"
            result = convex.call("mutation", "agents:update", {"agentId": agent_id, "systemPrompt": text})
            edits.append(Edit(agent_id, seq, float(result["updatedAt"]), time.time()))
            next_edit += period
        time.sleep(min(0.05, max(0.0, min(next_edit, end) - time.time())))
    return edits, killed


def _first_seen(host: HostProcess, edit: Edit) -> float | None:
    for event in host.events:
        if event["ev"] == "seen" and event["agentId"] == edit.agent_id and event["updatedAt"] >= edit.updated_at:
            return float(event["t"])
    return None


def _seen_everywhere(edit: Edit, hosts: list[HostProcess]) -> bool:
    return all(_first_seen(h, edit) is not None for h in hosts)


def report(
    args: argparse.Namespace,
    hosts: list[HostProcess],
    edits: list[Edit],
    killed: tuple[HostProcess, float] | None,
    before: dict[str, int],
    after: dict[str, int],
    elapsed_min: float,
) -> dict[str, Any]:
    def per_minute(path: str) -> float:
        return round((after.get(path, 0) - before.get(path, 0)) / elapsed_min, 1)

    killed_host = killed[0] if killed else None
    survivors = [h for h in hosts if h is not killed_host]
    latencies: list[float] = []
    spreads: list[float] = []
    lost = 0
    for edit in edits:
        seen = [_first_seen(h, edit) for h in survivors]
        times = [t for t in seen if t is not None]
        if len(times) < len(seen):
            lost += 1
            continue
        latencies.append(max(0.0, max(times) - edit.at) * 1000)
        spreads.append((max(times) - min(times)) * 1000)
    by_version = {(e.agent_id, e.updated_at): e.seq for e in edits}
    wrong = 0
    for host in hosts:
        for event in host.events:
            if event["ev"] != "seen":
                continue
            expected = by_version.get((event["agentId"], event["updatedAt"]))
            if expected is not None and event["marker"] != expected:
                wrong += 1
        wrong += sum(int(e.get("backwards") or 0) for e in host.events if e["ev"] == "done")
    gap_ms: float | None = None
    if killed is not None:
        later = [
            float(e["t"])
            for h in survivors
            for e in h.events
            if e["ev"] == "role" and e["role"] == "leader" and float(e["t"]) >= killed[1]
        ]
        gap_ms = round((min(later) - killed[1]) * 1000, 1) if later else None
    target = 60.0 / args.refresh
    return {
        "hosts": args.hosts,
        "redis": bool(args.redis),
        "seconds": args.seconds,
        "refresh_seconds": args.refresh,
        "resolve_interval_seconds": args.resolve_interval,
        "edits": len(edits),
        "changed_since_per_minute": per_minute("agents:changedSince"),
        "changed_since_target_per_minute": round(1.2 * target, 1),
        "changed_since_every_host_polls_per_minute": round(args.hosts * target, 1),
        "get_per_minute": per_minute("agents:get"),
        "edit_visible_all_hosts_ms": {
            "p50": round(percentile(latencies, 0.5), 1) if latencies else None,
            "p95": round(percentile(latencies, 0.95), 1) if latencies else None,
            "max": round(max(latencies), 1) if latencies else None,
            "bound": (args.refresh + 1) * 1000,
        },
        "edit_spread_first_to_last_host_ms": {
            "p50": round(percentile(spreads, 0.5), 1) if spreads else None,
            "p95": round(percentile(spreads, 0.95), 1) if spreads else None,
            "max": round(max(spreads), 1) if spreads else None,
        },
        "edits_lost": lost,
        "wrong_prompts": wrong,
        "leader_killed": killed is not None,
        "takeover_gap_ms": gap_ms,
        "own_polls_by_followers": sum(
            int(e.get("ownPolls") or 0) for h in hosts for e in h.events if e["ev"] == "done"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--edits-per-minute", type=float, required=True)
    parser.add_argument("--redis", action="store_true", help="share a redis-server (one poller per fleet)")
    parser.add_argument("--kill-leader-at", type=float, default=None, help="SIGKILL the leader at T seconds")
    parser.add_argument("--refresh", type=float, default=2.0, help="PROMPT_REFRESH_SECONDS of every host")
    parser.add_argument("--resolve-interval", type=float, default=0.2, help="seconds between each host's resolves")
    parser.add_argument("--json", type=Path, required=True, help="write the figures here")
    args = parser.parse_args()
    if args.kill_leader_at is not None and not args.redis:
        parser.error("--kill-leader-at needs --redis (without Redis there is no leader)")
    os.environ.pop("PROMPT_CACHE_REDIS_URL", None)
    result = run(args)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    cs = result["changed_since_per_minute"]
    print(
        f"changedSince/min {cs} vs target {result['changed_since_target_per_minute']} (one poller) "
        f"and baseline {result['changed_since_every_host_polls_per_minute']} (every host polls)"
    )


if __name__ == "__main__":
    main()
