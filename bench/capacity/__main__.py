"""``python -m bench.capacity``: see the package docstring."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

from bench.capacity import __doc__ as capacity_doc
from bench.capacity.calls import AGENTS, Services
from bench.capacity.soak import SOAK_MIN_CALLS, run_burst, run_soak
from bench.capacity.steps import run_steps
from bench.loadtest.audio import with_greetings
from bench.loadtest.workload import Workload, seed_agents
from devtools.openai_standin.config import DEFAULT_LLM_TTFT_MS, DEFAULT_STT_DELAY_MS, DEFAULT_TTS_TTFB_MS
from devtools.processes import (
    start_livekit,
    start_local_convex,
    start_openai_standin,
)
from services.store.file import local_backend_id


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.capacity",
        description=capacity_doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--executor", choices=("thread", "process"), default="thread")
    parser.add_argument("--calls", default="1,2,4,8", help="the steps: concurrent calls, comma-separated")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds each call of a step talks")
    parser.add_argument("--pause-seconds", type=float, default=1.0, help="the caller's pause before each phrase")
    parser.add_argument("--baseline", action="store_true", help="the same steps against bench/stock_worker.py")
    parser.add_argument("--soak", type=int, default=0, help="N calls (at least 1000) through one worker at capacity")
    parser.add_argument("--soak-sample-every", type=int, default=100, help="calls between two soak samples")
    parser.add_argument("--soak-concurrency", type=int, help="the soak's concurrency (default: the measured capacity)")
    parser.add_argument("--burst", action="store_true", help="2 x capacity calls at once, worker on its defaults")
    parser.add_argument(
        "--worker-cpus",
        help="pin the worker to these CPUs (e.g. 0) and everything else (callers, livekit-server, "
        "the stand-in, Convex) to the others: a step then measures the worker's cores alone",
    )
    parser.add_argument(
        "--capacity",
        type=int,
        help="a capacity measured before: skip the steps, size --soak and --burst from it",
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--worker-log-dir", type=Path, help="keep the workers' logs here")
    parser.add_argument(
        "--worker-env", action="append", default=[], type=lambda item: tuple(item.split("=", 1)),
        help="a setting for this worker (repeatable), e.g. AGENT_CONNECT_CONCURRENCY=2",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        args.steps = sorted({int(part) for part in args.calls.split(",") if part.strip()})
    except ValueError:
        parser.error(f"--calls takes comma-separated numbers, got {args.calls!r}")
    if not args.steps or args.steps[0] < 1:
        parser.error("--calls needs at least one step of 1 call or more")
    if args.capacity is not None and (args.capacity < 1 or args.baseline):
        parser.error("--capacity takes a number of calls (1 or more), and skips the steps --baseline compares")
    if 0 < args.soak < SOAK_MIN_CALLS:
        print(f"--soak {args.soak}: under {SOAK_MIN_CALLS} calls a slope is no verdict on leaks", file=sys.stderr)
    if args.soak_sample_every < 1:
        parser.error("--soak-sample-every takes a positive number of calls")
    args.cpu_split = None
    if args.worker_cpus:
        try:
            worker = {int(part) for part in args.worker_cpus.split(",") if part.strip()}
        except ValueError:
            parser.error(f"--worker-cpus takes comma-separated CPU numbers, got {args.worker_cpus!r}")
        others = os.sched_getaffinity(0) - worker
        if not worker or not worker < os.sched_getaffinity(0) or not others:
            parser.error(
                f"--worker-cpus must name some but not all of this host's CPUs {sorted(os.sched_getaffinity(0))}"
            )
        args.cpu_split = (worker, others)
    if any(len(item) != 2 for item in args.worker_env):
        parser.error("--worker-env takes NAME=VALUE")
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    docs = with_greetings(seed_agents(Workload(agents=AGENTS)))
    worker_cpus = None
    if args.cpu_split is not None:
        worker_cpus, others = args.cpu_split
        os.sched_setaffinity(0, others)  # inherited by every service and caller started below
    with tempfile.TemporaryDirectory(prefix="capacity-") as tmp, contextlib.ExitStack() as stack:
        seed_file = Path(tmp) / "agents.json"
        seed_file.write_text(json.dumps({"agents": docs}))
        convex = start_local_convex(seed=seed_file)
        stack.callback(convex.stop)
        livekit = start_livekit()
        stack.callback(livekit.stop)
        standin = start_openai_standin()
        stack.callback(standin.stop)
        log_dir = args.worker_log_dir or Path(tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        agent_ids = [local_backend_id(i) for i in range(AGENTS)]
        services = Services(livekit, convex, standin, agent_ids, log_dir, worker_cpus)
        delays = {
            "stt_delay_ms": DEFAULT_STT_DELAY_MS,
            "llm_ttft_ms": DEFAULT_LLM_TTFT_MS,
            "tts_ttfb_ms": DEFAULT_TTS_TTFB_MS,
        }
        print(f"capacity: {os.cpu_count()} CPUs; stand-in delays (ms) {delays}; {args.seconds:g} s/step", flush=True)
        out: dict[str, Any] = {
            "cpus": os.cpu_count(),
            "worker_cpus": sorted(worker_cpus) if worker_cpus else None,
            "standin_delays_ms": delays,
            "seconds": args.seconds,
        }
        if args.capacity is not None:
            out |= {"worker": "agent", "executor": args.executor, "steps": [], "capacity": args.capacity}
        else:
            out |= await run_steps(
                services, module="agent", executor=args.executor, steps=args.steps, args=args,
                label=f"this worker ({args.executor})",
            )  # fmt: skip
        if args.baseline:
            out["baseline"] = await run_steps(
                services, module="bench.stock_worker", executor="default", steps=args.steps, args=args,
                label="stock worker (livekit's defaults)",
            )  # fmt: skip
        capacity = int(out["capacity"]) or 1
        if args.burst:
            out["burst"] = await run_burst(
                services, executor=args.executor, calls=2 * capacity, extra_env=dict(args.worker_env)
            )
            print(f"burst of {2 * capacity}: lost {out['burst']['lost_calls']}; {out['burst']}", flush=True)
        if args.soak:
            out["soak"] = await run_soak(
                services, executor=args.executor, calls=args.soak,
                concurrency=args.soak_concurrency or capacity, every=args.soak_sample_every,
                extra_env=dict(args.worker_env),
            )  # fmt: skip
            soak = out["soak"]
            print(f"soak: growth per 100 calls after the first 200 {soak['growth_per_100_calls']}; "
                  f"spread around the fit {soak['residual_sd']}", flush=True)  # fmt: skip
        return out


def write_json(path: Path, figures: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n")


def main(argv: list[str] | None = None, out: IO[str] = sys.stdout) -> int:
    args = parse_args(argv)
    figures = asyncio.run(run(args))
    if args.json:
        write_json(args.json, figures)
        print(f"wrote {args.json}", file=out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
