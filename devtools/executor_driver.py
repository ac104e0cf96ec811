"""Feeds joins to the real worker through livekit-agents' real executors.

    python -m devtools.executor_driver --rooms rooms.json --concurrency 8 --out out.json
    python -m devtools.executor_driver --rooms rooms.json --arrivals arrivals.json --concurrency 8 --out out.json
    python -m devtools.executor_driver --interactive    # rooms on stdin, "JOIN {...}" lines out

Runs the worker's ``AgentServer`` unregistered (production defaults, so PROCESS mode
keeps warm idle processes) and ``simulate_job``s one job per room, at most
``--concurrency`` at once. Settings come from the environment as for the worker, with
``AGENT_MODEL_FACTORY=devtools.fake_models:recording_session`` and ``PROBE_EVENTS``:
each job appends what it resolved there, which is how a join's end is seen across
processes; ``PROBE_END_JOB=SECONDS`` ends each job that long after its session is built.
When each job started and resolved its prompt is read from what the worker logs of it
(``job_started``'s ``promptResolvedMs``, ``job_ended``'s ``durationMs``; ``JobLog``). A separate
process per run gives each run its own forkserver, which inherits the environment.
Before each job the driver does what ``on_request`` does in production (``simulate_job``
skips it): it starts the main process's load of the agent. ``--interactive`` runs one
room per line of stdin, one at a time, and prints each outcome as ``JOIN <json>``, so a
test can act between jobs (edit an agent, stop Convex). ``--arrivals`` (a JSON list of
seconds, one per room, counted from the worker's start) makes the run open-loop: each
join waits for its arrival, then for one of the ``--concurrency`` slots, and its
``dispatchedAt`` is its arrival, so time spent queued for a slot counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog
from livekit.agents import AgentServer
from livekit.protocol import models
from structlog.typing import EventDict

from agent.admission.targeting import JobTargetError, resolve_target
from agent.server import build_server
from agent.service_holder import get_service, remove_host_directory
from agent.settings import WorkerSettings
from services.hints import clip

JOIN_TIMEOUT_SECONDS = 60.0
CLOSE_TIMEOUT_SECONDS = 15.0


class EventTail:
    """Reads the probe events file as jobs append to it; wakes the joins waiting for them."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}

    def expect(self, room: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[room] = future
        return future

    def _read_new(self) -> list[str]:
        if not self._path.exists():
            return []
        with self._path.open("rb") as source:
            source.seek(self._offset)
            data = source.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        return complete.decode("utf-8").splitlines()

    async def run(self) -> None:
        while True:
            for line in await asyncio.to_thread(self._read_new):
                event = json.loads(line)
                waiter = self._waiters.pop(event.get("room", ""), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(event)
            await asyncio.sleep(0.01)


class JobLog(logging.Handler):
    """The worker's own account of each job, by room: when it started (``job_ended`` is
    logged ``durationMs`` after the start) and how long its prompt took to resolve
    (``promptResolvedMs`` of ``job_started``, or of ``job_timings`` for a job that ended
    before its start was logged). THREAD jobs log in this process, read as structlog
    events; PROCESS jobs' records reach this process through livekit-agents' log
    forwarding, as standard records on the worker's logger with the time they were made
    in the job process (``LogRecord.created``)."""

    LOGGER = "agent.worker"

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._started_at: dict[str, float] = {}
        self._prompt_resolved_ms: dict[str, float] = {}

    def _note(self, event: object, fields: Mapping[str, Any], at: float) -> None:
        room = fields.get("room")
        if not isinstance(room, str):
            return
        room = clip(room)  # as the worker logs it in job_started and job_ended
        if event in ("job_started", "job_timings") and fields.get("promptResolvedMs") is not None:
            self._prompt_resolved_ms.setdefault(room, float(fields["promptResolvedMs"]))
        elif event == "job_ended" and fields.get("durationMs") is not None:
            self._started_at[room] = at - float(fields["durationMs"]) / 1000

    def emit(self, record: logging.LogRecord) -> None:
        """A record forwarded from a PROCESS-mode job process."""
        self._note(record.getMessage(), record.__dict__, record.created)
        if logging.lastResort is not None and record.levelno >= logging.lastResort.level:
            logging.lastResort.handle(record)  # what the driver printed before it listened here

    def tap(self, logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        """A structlog processor: an event logged in this process (a THREAD job's)."""
        self._note(event_dict.get("event"), event_dict, time.time())
        return event_dict

    def times(self, room: str) -> dict[str, float]:
        """``jobStartedAt`` and ``promptResolvedAt`` (wall clock) of the job in ``room``, as
        far as the worker logged them."""
        started, resolved_ms = self._started_at.get(clip(room)), self._prompt_resolved_ms.get(clip(room))
        if started is None or resolved_ms is None:
            return {}
        return {"jobStartedAt": started, "promptResolvedAt": started + resolved_ms / 1000}

    @classmethod
    def attach(cls) -> JobLog:
        """Listen to the worker's events in this process (structlog, left as it is
        otherwise) and to its logger for forwarded records. Call before the worker is built."""
        job_log = cls()
        structlog.configure(processors=[job_log.tap, *structlog.get_config()["processors"]])
        logger = logging.getLogger(cls.LOGGER)
        logger.setLevel(logging.INFO)
        logger.addHandler(job_log)
        return job_log


async def _discard_worker_messages(server: AgentServer) -> None:
    """Reads what the worker sends livekit-server (job status updates), as its connection
    would. Unregistered, nothing reads them: livekit-agents queues them in a channel of
    128, and once it is full every further update waits forever, and ``aclose`` with it
    (the driver then sat out its whole close timeout while the refresher kept polling)."""
    channel = getattr(server, "_msg_chan", None)  # private: this is dev tooling, not the worker
    if channel is None:
        return
    async for _ in channel:  # ends when aclose closes the channel
        pass


async def _job_ended(server: AgentServer, room: str) -> None:
    """Returns once no running job is in ``room`` (``simulate_job`` registers it before
    returning). livekit-agents has no event for a job's end, so this polls."""
    while any(info.job.room.name == room for info in server.active_jobs):  # noqa: ASYNC110 - no event to wait on
        await asyncio.sleep(0.05)


async def _event_or_end(
    server: AgentServer, room: str, waiter: asyncio.Future[dict[str, Any]]
) -> dict[str, Any] | None:
    """The job's probe event, or ``None`` if the job ended without one (a refused job,
    such as one for a deleted agent, never builds a session): no 60 s wait for those."""
    ended = asyncio.create_task(_job_ended(server, room))
    try:
        racers: set[asyncio.Future[Any]] = {waiter, ended}
        await asyncio.wait(racers, timeout=JOIN_TIMEOUT_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        if waiter.done():
            return waiter.result()
        if not ended.done():
            raise TimeoutError(f"no event from {room} within {JOIN_TIMEOUT_SECONDS}s")
        # The event is written before the job ends; give the tail a moment to read it.
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(waiter), 1.0)
        return None
    finally:
        ended.cancel()


def _as_on_request(room: str, settings: WorkerSettings) -> None:
    """What ``on_request`` does before a job is assigned: start loading its agent."""
    try:
        target = resolve_target(room, "", settings.room_name_pattern)
    except JobTargetError:
        return
    get_service().prefetch(target.agent_id, updated_at=target.updated_at)


async def _close(server: AgentServer) -> None:
    """Closes the worker; jobs still winding down may keep livekit's pool from closing, so
    it does not wait forever, and says what it gave up waiting for."""
    try:
        await asyncio.wait_for(server.aclose(), CLOSE_TIMEOUT_SECONDS)
    except TimeoutError:
        coroutines = (task.get_coro() for task in asyncio.all_tasks() if not task.done())
        waiting = Counter(getattr(coro, "__qualname__", type(coro).__name__) for coro in coroutines)
        print(f"executor driver: worker did not close within {CLOSE_TIMEOUT_SECONDS}s; "
              f"still waiting: {waiting.most_common()}", file=sys.stderr)  # fmt: skip


async def drive(
    rooms: list[str] | None, concurrency: int, arrivals: list[float] | None = None
) -> tuple[float, list[dict[str, Any]]]:
    """Run ``rooms`` (``None``: read them from stdin, one job at a time, echoing each);
    returns when the worker had started (wall clock) and each join's outcome; each outcome
    of ``rooms`` also has its job's times from the worker's log (``JobLog.times``)."""
    job_log = JobLog.attach()
    settings = WorkerSettings.from_env()
    server = build_server(settings, http_port=0)  # drivers may run side by side
    started = asyncio.Event()
    server.on("worker_started", started.set)
    run = asyncio.create_task(server.run(devmode=False, unregistered=True))
    await asyncio.wait_for(started.wait(), 60)
    started_wall, started_at = time.time(), time.monotonic()
    discard_task = asyncio.create_task(_discard_worker_messages(server))
    tail = EventTail(Path(os.environ["PROBE_EVENTS"]))
    tail_task = asyncio.create_task(tail.run())
    slots = asyncio.Semaphore(concurrency)
    results: list[dict[str, Any]] = []

    async def join(index: int, room: str) -> None:
        if arrivals is not None:
            await asyncio.sleep(max(0.0, started_at + arrivals[index] - time.monotonic()))
        arrived = time.time()
        async with slots:
            dispatched = arrived if arrivals is not None else time.time()
            outcome: dict[str, Any] = {"room": room, "dispatchedAt": dispatched, "event": None}
            waiter = tail.expect(room)
            try:
                _as_on_request(room, settings)
                await server.simulate_job(room, fake_job=True, room_info=models.Room(name=room, sid=f"RM_lt{index}"))
                outcome["event"] = await _event_or_end(server, room, waiter)
                if outcome["event"] is None:
                    outcome["error"] = "the job ended without resolving a prompt (refused, e.g. a deleted agent)"
            except Exception as exc:  # noqa: BLE001 - a failed join is a result, not a crash
                outcome["error"] = f"{type(exc).__name__}: {exc}"
            results.append(outcome)

    try:
        if rooms is not None:
            await asyncio.gather(*(join(i, room) for i, room in enumerate(rooms)))
        else:
            print("READY", flush=True)
            index = 0
            while line := (await asyncio.to_thread(sys.stdin.readline)).strip():
                await join(index, line)
                print("JOIN " + json.dumps(results[-1]), flush=True)
                index += 1
    finally:
        tail_task.cancel()
        await _close(server)
        run.cancel()
        discard_task.cancel()
        await asyncio.gather(run, tail_task, discard_task, return_exceptions=True)
    for outcome in results:  # the jobs have ended: both of their events are in
        outcome.update(job_log.times(outcome["room"]))
    return started_wall, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rooms", type=Path, help="JSON list of room names, one job each")
    parser.add_argument("--interactive", action="store_true", help="rooms from stdin, outcomes to stdout")
    parser.add_argument("--arrivals", type=Path, help="JSON list: each room's arrival, seconds after the start")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.interactive == bool(args.rooms or args.out):
        parser.error("give either --rooms and --out, or --interactive")
    rooms = None if args.interactive else json.loads(args.rooms.read_text())
    arrivals = json.loads(args.arrivals.read_text()) if args.arrivals else None
    if arrivals is not None and (rooms is None or len(arrivals) != len(rooms)):
        parser.error("--arrivals needs --rooms and one arrival per room")
    started_at, results = asyncio.run(drive(rooms, args.concurrency, arrivals))
    if args.out is not None:
        service = get_service()
        stats = service.stats()
        cache_bytes = stats.host_bytes if stats.host_bytes is not None else stats.ram_prompt_bytes
        report = {"startedAt": started_at, "joins": results, "cacheBytes": cache_bytes}
        args.out.write_text(json.dumps(report))
    remove_host_directory()  # os._exit below skips the exit handler that would
    sys.stdout.flush()
    sys.stderr.flush()
    # A throwaway process: leftover job threads must not keep it alive once the
    # results are written (THREAD-mode write-backs of the load test are not needed).
    os._exit(0)


if __name__ == "__main__":  # forkserver re-imports the main module in job processes
    main()
