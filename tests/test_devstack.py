"""``make worker``'s dev stack stops everything it started on SIGTERM and on Ctrl-C.

It is started by its real command with no OPENAI_API_KEY, so it starts livekit-server,
the OpenAI stand-in and ``python -m agent dev`` (which has children of its own); every
one of those processes must be gone once the stack has exited.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from devtools.processes import LIVEKIT_SERVER, free_port
from tests.conftest import REPO, project_free_env, unavailable
from tests.helpers import wait_for


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (read from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running, stopped or sleeping: anything but gone or a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_until(check: object, seconds: float) -> bool:
    assert callable(check)
    return bool(wait_for(check, seconds, interval=0.1))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_the_dev_stack_stops_livekit_the_standin_and_the_worker_on_sigterm_and_ctrl_c(signum: signal.Signals) -> None:
    if not LIVEKIT_SERVER.exists():
        unavailable(f"{LIVEKIT_SERVER} is missing: run `make livekit-server`")
    env = {**project_free_env(), "AGENT_HTTP_PORT": "0", "LOG_FORMAT": "json"}
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.devstack", "--livekit-port", str(free_port())],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip())

    threading.Thread(target=pump, daemon=True).start()
    children: set[int] = set()
    try:
        registered = wait_until(lambda: any("registered worker" in line for line in lines), 120)
        assert registered, "the dev worker never registered:\n" + "\n".join(lines[-40:])
        assert any("models: the OpenAI stand-in at http://127.0.0.1:" in line for line in lines), "\n".join(lines)
        children = descendants(process.pid)
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() for pid in children]
        for wanted in ("server --dev", "devtools.openai_standin", "agent dev"):
            assert any(wanted in command for command in commands), f"no {wanted!r} among {commands}"
        process.send_signal(signum)  # Ctrl-C: the terminal sends SIGINT to the stack
        assert process.wait(60) == 0, "\n".join(lines[-40:])
        gone = wait_until(lambda: not [pid for pid in children if alive(pid)], 20)
        left = [pid for pid in children if alive(pid)]
        assert gone, f"still running after the stack exited: {left}\n" + "\n".join(lines[-20:])
    finally:
        for pid in [process.pid, *children]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(10)
