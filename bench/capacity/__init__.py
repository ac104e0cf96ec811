"""``python -m bench.capacity``: how many talking calls one host carries.

Each step holds ``calls`` concurrent talking calls on one worker started by its real
command (``python -m agent start``), with the production session against the OpenAI
stand-in (its documented delays). Every call greets; then its caller (a process of its
own, ``devtools.caller --serve``) waits for the agent to finish, pauses, speaks a phrase
(espeak-ng, real time), hears the reply, and repeats for ``--seconds``. Per step:

- ``lost_calls``: calls with no agent, or whose caller stopped hearing it;
- ``turn_ms`` p50/p95: the end of the caller's phrase -> the reply's first frame above
  the caller's level; ``first_audio_ms`` p95: dispatch -> the greeting's first frame;
- ``audio_gaps`` / ``longest_gap_ms``: stalls over 100 ms in the agent audio the caller
  receives, while the agent speaks (no frame arrived: a stalled receive path; a sender
  that runs dry sends silence instead, which shows in the loop lag below);
- ``worker_cpu_pct``: the worker's process tree, % of one core, over the window in which
  every call talks; ``cpu_seconds_per_call_minute``; ``callers_cpu_pct`` apart;
- ``pss_mb`` (the tree's proportional set size, the most seen in the window) and
  ``pss_per_call_mb``: (``pss_mb`` - the worker's main process idle) / calls, so under
  PROCESS a job process (one per call) counts as the call's;
- ``loop_lag_p99_ms``: the worst job loop's p99 lag (``job_ended``'s ``loopLagP99Ms``).

``capacity`` is the largest step with no lost call, ``turn_ms`` p95 within the 1-call
step's p95 + 200 ms and no gap over 200 ms; ``calls_per_core`` is it over the worker's
CPUs. ``--worker-cpus 0`` pins the worker to CPU 0 and everything else (callers,
livekit-server, the stand-in, Convex) to the others, so a step measures the worker's cores
rather than the callers' CPU. ``--baseline`` runs the same steps against
``bench/stock_worker.py``. ``--burst`` sends 2 x capacity calls (greeting and one turn) at
once through ``dispatch_agent`` to a worker on its defaults; ``--soak N`` sends N such
calls through one worker at the capacity and samples its RSS, PSS, open files, threads
and asyncio tasks (the worker's ``agent_asyncio_tasks`` gauge) every 100 calls, with the
growth per 100 calls fitted after the first 200. ``--capacity N`` skips the steps.

    .venv/bin/python -m bench.capacity --executor thread --worker-cpus 0 --calls 1,2,4,6,8 --baseline
    .venv/bin/python -m bench.capacity --executor thread --worker-cpus 0 --capacity 6 --burst --soak 1000
"""
