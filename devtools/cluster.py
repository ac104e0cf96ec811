"""``python -m devtools.cluster --nodes 2 --workers 2``: a LiveKit cluster on this machine.

One redis-server, N ``livekit-server`` nodes routing through it, HAProxy in front (see
``devtools.processes.start_cluster``) and W worker hosts (``python -m agent start``) whose
``LIVEKIT_URL`` is the load balancer's. Worker ``i`` is first registered on node
``i mod N`` (the other nodes are held out of HAProxy while it connects), so the workers
start spread over the nodes as a fleet's hosts would be; after a node dies its workers
reconnect through the load balancer. The workers share the cluster's Redis as
``PROMPT_CACHE_REDIS_URL`` (the prompt fleet's keys next to LiveKit's routing keys).

The workers take the rest of their settings from this environment (``CONVEX_URL``,
``OPENAI_API_KEY`` or ``AGENT_MODEL_FACTORY``...; see ``.env.example``); with neither
``CONVEX_URL`` nor ``AGENTS_FILE`` set they get the demo agents, as ``make worker`` does. It prints the
URLs and the key, then runs until SIGTERM or Ctrl-C, and stops everything it started.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType

from devtools.processes import (
    DEMO_SEED,
    LiveKitCluster,
    ServiceStartError,
    WorkerHost,
    start_cluster,
    start_worker_host,
)


def start_fleet(cluster: LiveKitCluster, workers: int, env: dict[str, str], *, echo: bool) -> list[WorkerHost]:
    """``workers`` worker hosts, worker ``i`` first registered on node ``i mod N``."""
    hosts: list[WorkerHost] = []
    try:
        for i in range(workers):
            with cluster.only_through(i % len(cluster.nodes)):
                worker_env = {"PROMPT_CACHE_REDIS_URL": cluster.redis.url, **env}
                hosts.append(start_worker_host(f"worker{i + 1}", cluster.endpoint, worker_env, echo=echo))
    except BaseException:
        for host in hosts:
            host.stop()
        raise
    return hosts


def embedded_agents_env() -> dict[str, str]:
    """The demo agents as ``AGENTS_FILE`` when neither ``CONVEX_URL`` nor ``AGENTS_FILE`` is
    set, as ``make worker`` does: the worker itself has no default agents file."""
    if os.environ.get("CONVEX_URL") or os.environ.get("AGENTS_FILE"):
        return {}
    return {"AGENTS_FILE": str(DEMO_SEED)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2, help="livekit-server nodes (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="worker hosts (default 2; 0 for none)")
    parser.add_argument("--quiet", action="store_true", help="do not print the workers' output")
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.workers < 0:
        parser.error("--nodes must be at least 1 and --workers at least 0")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        cluster = start_cluster(args.nodes)
    except ServiceStartError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    hosts: list[WorkerHost] = []
    try:
        print(f"cluster: redis {cluster.redis.url}", flush=True)
        for node in cluster.nodes:
            print(f"cluster: {node.name} {node.url} ({node.node_id})", flush=True)
        print(f"cluster: load balancer {cluster.url} (admin socket {cluster.haproxy.admin_socket})", flush=True)
        print(f"cluster: LIVEKIT_URL={cluster.url}; key and secret: devtools.processes.CLUSTER_KEY/_SECRET", flush=True)
        hosts = start_fleet(cluster, args.workers, embedded_agents_env(), echo=not args.quiet)
        for host in hosts:
            print(f"cluster: {host.name} registered (pid {host.managed.process.pid})", flush=True)
        print("cluster: running; Ctrl-C or SIGTERM stops everything", flush=True)
        while not stop.wait(1):
            pass  # signals are handled between waits
        return 0
    except ServiceStartError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        for host in hosts:
            host.stop()
        cluster.stop()
        print("cluster: stopped", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
