"""``make worker``: the worker on embedded defaults, for a fresh machine.

Whatever can be embedded is: with LIVEKIT_URL unset a ``livekit-server --dev`` is
started on 127.0.0.1:7880 (from .tools, see the Makefile); with CONVEX_URL unset the
agents come from the embedded file (AGENTS_FILE, the demo agents unless set); with
OPENAI_API_KEY unset (and no other AGENT_MODEL_FACTORY) the OpenAI stand-in
(``devtools.openai_standin``: espeak-ng speech, no key, no network) serves the
session's STT, LLM and TTS, so a newcomer hears the agent with nothing to configure.
AGENT_NAME defaults to ``dev-agent``, the name ``python -m devtools.talk`` dispatches.
Then ``python -m agent dev`` runs until SIGTERM or Ctrl-C, and on either every process
started here is stopped (none is left orphaned).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from devtools.processes import DEMO_SEED, ServiceStartError, start_livekit, start_openai_standin

DEV_AGENT_NAME = "dev-agent"
"""The explicit-dispatch name of ``make worker``'s worker when AGENT_NAME is unset."""
PLACEHOLDER_OPENAI_KEY = "standin-no-key"  # not a secret: the stand-in checks no key
DEFAULT_FACTORY = "agent.sessions.openai:openai_session"
WORKER_STOP_SECONDS = 20.0
"""How long the worker gets to drain after SIGTERM before it is killed."""


@dataclass
class DevStack:
    """The child processes started here, stopped in reverse order by ``stop``."""

    stoppers: list[Callable[[], None]] = field(default_factory=list)
    worker: subprocess.Popen[bytes] | None = None
    stopping: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        self.stopping.set()
        if self.worker is not None:
            _stop_group(self.worker, WORKER_STOP_SECONDS)
        while self.stoppers:
            self.stoppers.pop()()


def _stop_group(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process's group (its own session), SIGKILL it after ``grace`` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def models_line(env: dict[str, str]) -> str:
    """Which models the worker's sessions run, in one line for the start-up banner."""
    factory = env.get("AGENT_MODEL_FACTORY") or DEFAULT_FACTORY
    if factory != DEFAULT_FACTORY:
        return f"models: {factory} (AGENT_MODEL_FACTORY)"
    base = env.get("OPENAI_BASE_URL")
    if env.get("OPENAI_API_KEY") == PLACEHOLDER_OPENAI_KEY:
        return f"models: the OpenAI stand-in at {base} (espeak-ng speech; set OPENAI_API_KEY for the real models)"
    return f"models: OpenAI at {base or 'https://api.openai.com/v1'} (OPENAI_API_KEY is set)"


def prepare(stack: DevStack, env: dict[str, str], livekit_port: int) -> None:
    """Start what the environment does not provide and point ``env`` at it."""
    if not env.get("LIVEKIT_URL"):
        livekit = start_livekit(port=livekit_port)
        stack.stoppers.append(livekit.stop)
        env |= {
            "LIVEKIT_URL": livekit.url,
            "LIVEKIT_API_KEY": livekit.api_key,
            "LIVEKIT_API_SECRET": livekit.api_secret,
        }
        print(f"devstack: livekit-server --dev on {livekit.url} (key devkey, secret secret)", flush=True)
    if not env.get("CONVEX_URL"):
        env["AGENTS_FILE"] = env.get("AGENTS_FILE") or str(DEMO_SEED)
        print(f"devstack: CONVEX_URL unset, agents come from {env['AGENTS_FILE']}", flush=True)
    factory = env.get("AGENT_MODEL_FACTORY") or DEFAULT_FACTORY
    if factory == DEFAULT_FACTORY and not env.get("OPENAI_API_KEY"):
        standin = start_openai_standin()
        stack.stoppers.append(standin.stop)
        env |= {"OPENAI_BASE_URL": standin.base_url, "OPENAI_API_KEY": PLACEHOLDER_OPENAI_KEY}
    env["AGENT_NAME"] = env.get("AGENT_NAME") or DEV_AGENT_NAME
    print(f"devstack: {models_line(env)}", flush=True)
    print(f"devstack: agent name {env['AGENT_NAME']!r}; talk to it with `make talk`", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--livekit-port", type=int, default=7880, help="when LIVEKIT_URL is unset (default 7880)")
    args = parser.parse_args(argv)
    stack = DevStack()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        if not stack.stopping.is_set():
            print(f"devstack: {signal.Signals(signum).name}, stopping what it started", flush=True)
        stack.stopping.set()
        if stack.worker is None:
            raise KeyboardInterrupt  # still starting: unwind, the finally below stops the rest
        with contextlib.suppress(ProcessLookupError):
            os.killpg(stack.worker.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    env = dict(os.environ)
    try:
        prepare(stack, env, args.livekit_port)
        # Its own session: Ctrl-C reaches it once, from here, and its whole group is
        # stopped together (livekit's dev reloader and job processes included).
        stack.worker = subprocess.Popen([sys.executable, "-m", "agent", "dev"], env=env, start_new_session=True)
        returncode = stack.worker.wait()
        return 0 if stack.stopping.is_set() else returncode
    except ServiceStartError as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        stack.stop()


if __name__ == "__main__":
    raise SystemExit(main())
