"""Memory per call under each executor: PSS of the worker's process tree, idle and with
``--calls`` calls held open (fake LLM, no audio), in the same run.

    .venv/bin/python -m bench.executor_memory [--calls 8] [--settle-seconds 10]

The worker is the executor driver (``devtools.executor_driver --interactive``: the real
``AgentServer``, production executor settings); each call is one ``simulate_job`` whose
session stays open. PSS (proportional set size) shares each page among the processes
mapping it, so the tree's sum counts shared libraries and the host tier's map once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import IO

from bench.capacity.proc import memory_kb, process_tree
from devtools.processes import DEMO_SEED, REPO, start_local_convex
from services.store.file import local_backend_id

DEMO_AGENTS = 4
PROJECT_PREFIXES = ("LIVEKIT_", "CONVEX_", "PROMPT_", "AGENT", "OPENAI_", "PROBE_")


def pss_mb(root: int) -> float:
    return memory_kb(process_tree(root), "Pss:") / 1024


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)
    lines.put("")  # the driver exited


def measure(executor: str, calls: int, settle: float, convex_url: str, deploy_key: str) -> tuple[float, float, int]:
    """(idle MB, loaded MB, processes loaded) for one executor."""
    with TemporaryDirectory(prefix="bench-memory-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(PROJECT_PREFIXES)}
        env |= {
            "LIVEKIT_URL": "ws://127.0.0.1:9",  # unregistered: never dialled
            "LIVEKIT_API_KEY": "devkey",
            "LIVEKIT_API_SECRET": "secret",
            "CONVEX_URL": convex_url,
            "CONVEX_DEPLOY_KEY": deploy_key,
            "AGENT_EXECUTOR": executor,
            "AGENT_MODEL_FACTORY": "devtools.fake_models:recording_session",
            "PROBE_EVENTS": str(Path(tmp) / "events.jsonl"),
            # Killed below, the driver cannot remove a directory of its own: give it this one.
            "PROMPT_HOST_CACHE_DIR": str(Path(tmp) / "host"),
        }
        driver = subprocess.Popen(
            [sys.executable, "-m", "devtools.executor_driver", "--interactive"],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert driver.stdin is not None and driver.stdout is not None
        # The driver's stdout carries its log stream too: read it all the time, or a full
        # pipe blocks the driver (and its calls) while this process sleeps.
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_pump, args=(driver.stdout, lines), daemon=True).start()
        try:
            while (first := lines.get(timeout=120)).strip() != "READY":
                if not first:
                    raise RuntimeError("the executor driver exited before it was ready")
            time.sleep(settle)  # a benchmark: let the idle pool finish prewarming
            idle = pss_mb(driver.pid)
            for n in range(calls):
                driver.stdin.write(f"agent-{local_backend_id(n % DEMO_AGENTS)}--mem{n}\n")
                driver.stdin.flush()
                while not (line := lines.get(timeout=120)).startswith("JOIN "):
                    if not line:
                        raise RuntimeError("the executor driver exited during a call")
                if '"error"' in line:
                    raise RuntimeError(f"call {n} failed: {line[:300]}")
            time.sleep(settle)
            return idle, pss_mb(driver.pid), len(process_tree(driver.pid))
        finally:
            # The calls are held open on purpose (no PROBE_END_JOB): end the whole tree.
            for pid in reversed(process_tree(driver.pid)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            driver.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--settle-seconds", type=float, default=10.0)
    parser.add_argument("--executor", action="append", choices=("thread", "process"))
    args = parser.parse_args()
    convex = start_local_convex(seed=DEMO_SEED)
    try:
        print(f"{'executor':<10} {'idle MB':>10} {'with calls MB':>14} {'per call MB':>12} {'processes':>10}")
        for executor in args.executor or ["thread", "process"]:
            idle, loaded, processes = measure(executor, args.calls, args.settle_seconds, convex.url, convex.deploy_key)
            per_call = (loaded - idle) / args.calls
            print(f"{executor:<10} {idle:>10.1f} {loaded:>14.1f} {per_call:>12.1f} {processes:>10}")
    finally:
        convex.stop()


if __name__ == "__main__":
    main()
