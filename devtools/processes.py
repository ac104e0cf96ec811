"""Start and stop the local services as child processes on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from agent.settings import server_api_url

REPO = Path(__file__).resolve().parent.parent
DEMO_SEED = REPO / "convex" / "seed" / "demo-agents.json"
LIVEKIT_SERVER = REPO / ".tools" / "bin" / "server"
DEFAULT_LOCAL_DEPLOY_KEY = "local-dev-deploy-key"  # mirrors convex/local/main.ts
LIVEKIT_DEV_KEY = "devkey"
LIVEKIT_DEV_SECRET = "secret"


class ServiceStartError(RuntimeError):
    """A local service did not come up; the message carries its output."""


PORT_RACE_ATTEMPTS = 3
_Started = TypeVar("_Started")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _on_free_ports(start: Callable[[], _Started]) -> _Started:
    """Runs ``start`` (which picks its ports with ``free_port``) again on new ports when
    its server could not bind: ``free_port`` releases the port it found, and another
    process can take it before the server binds it (seen with tests running side by side)."""
    for attempt in range(1, PORT_RACE_ATTEMPTS + 1):
        try:
            return start()
        except ServiceStartError as exc:
            if attempt == PORT_RACE_ATTEMPTS or "address already in use" not in str(exc).lower():
                raise
    raise AssertionError("unreachable: the last attempt returns or raises")


@dataclass
class ManagedProcess:
    name: str
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)

    def start_failed(self, what: str) -> ServiceStartError:
        """Stop the process; the error to raise, with its exit status and its last lines."""
        self.stop()
        tail = "\n".join(self.output[-30:])
        return ServiceStartError(f"{self.name} {what} (exit {self.process.poll()}):\n{tail}")


def _spawn(
    name: str, args: list[str], *, ready: str, timeout: float, env: dict[str, str] | None = None
) -> tuple[ManagedProcess, str]:
    """Start ``args`` in its own process group; wait for a line containing ``ready``."""
    process = subprocess.Popen(
        args,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    managed = ManagedProcess(name, process)
    found: list[str] = []
    seen = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            managed.output.append(line.rstrip())
            del managed.output[:-200]
            if not seen.is_set() and ready in line:
                found.append(line.strip())
                seen.set()

    threading.Thread(target=pump, name=f"{name}-output", daemon=True).start()
    deadline = time.monotonic() + timeout
    while not seen.wait(0.05):
        if process.poll() is not None or time.monotonic() > deadline:
            raise managed.start_failed("did not start")
    return managed, found[0]


@dataclass
class LocalConvex:
    """The project's functions behind Convex's HTTP API (convex/local)."""

    url: str
    deploy_key: str
    managed: ManagedProcess

    def call(self, kind: str, path: str, args: dict[str, Any]) -> Any:
        response = httpx.post(
            f"{self.url}/api/{kind}",
            json={"path": path, "args": args, "format": "json"},
            headers=self._auth(),
            timeout=30,
        )
        body = response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"{path}: {body}")
        return body["value"]

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Convex {self.deploy_key}"}

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/_local/stats", headers=self._auth(), timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def reads(self) -> int:
        """Requests of any kind served since the last reset."""
        return int(self.stats()["total"])

    def reset(self, *, data: bool = False) -> None:
        url = f"{self.url}/_local/reset" + ("?data=1" if data else "")
        httpx.post(url, headers=self._auth(), timeout=30).raise_for_status()

    def stop(self) -> None:
        self.managed.stop()


def start_local_convex(
    *, seed: Path | None = None, latency_ms: float = 0, deploy_key: str = DEFAULT_LOCAL_DEPLOY_KEY, timeout: float = 90
) -> LocalConvex:
    if shutil.which("npm") is None:
        raise ServiceStartError("npm is not installed")
    args = ["npm", "--prefix", "convex", "run", "--silent", "local", "--", "--port", "0"]
    if seed is not None:
        args += ["--seed", str(seed)]
    if latency_ms:
        args += ["--latency-ms", str(latency_ms)]
    managed, line = _spawn(
        "local-convex", args, ready="ready http://", timeout=timeout, env={"CONVEX_DEPLOY_KEY": deploy_key}
    )
    return LocalConvex(url=line.split("ready ", 1)[1].strip(), deploy_key=deploy_key, managed=managed)


@dataclass
class RedisServer:
    url: str
    managed: ManagedProcess

    def flush(self) -> None:
        """Empty every database, so a test or a run starts from nothing shared."""
        import redis as redis_sync

        client = redis_sync.Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()

    def dataset_bytes(self) -> int:
        """Memory the stored keys and values take (``used_memory_dataset``)."""
        import redis as redis_sync

        client = redis_sync.Redis.from_url(self.url)
        try:
            return int(client.info("memory").get("used_memory_dataset", 0))
        finally:
            client.close()

    def stop(self) -> None:
        self.managed.stop()


def start_redis(timeout: float = 20) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceStartError("redis-server is not installed (apt-get install redis-server)")

    def start() -> RedisServer:
        port = free_port()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        managed, _ = _spawn("redis", args, ready="Ready to accept connections", timeout=timeout)
        return RedisServer(url=f"redis://127.0.0.1:{port}/0", managed=managed)

    return _on_free_ports(start)


@dataclass
class LiveKitServer:
    url: str
    api_key: str
    api_secret: str
    managed: ManagedProcess

    @property
    def http_url(self) -> str:
        """The server API's address (``LiveKitAPI`` wants ``http://``)."""
        return server_api_url(self.url)

    def stop(self) -> None:
        self.managed.stop()


def start_livekit(timeout: float = 60, port: int | None = None) -> LiveKitServer:
    """``livekit-server --dev`` on loopback (key ``devkey``, secret ``secret``); on ``port``
    if given, else on free ports (picked again if one was taken before the server bound it)."""
    if not LIVEKIT_SERVER.exists():
        raise ServiceStartError(f"{LIVEKIT_SERVER} is missing: run `make livekit-server`")
    if port is not None:
        return _start_livekit_on(port, timeout)
    return _on_free_ports(lambda: _start_livekit_on(free_port(), timeout))


def _start_livekit_on(port: int, timeout: float) -> LiveKitServer:
    config = f"port: {port}\nrtc:\n  tcp_port: {free_port()}\n  udp_port: {free_port()}\n  use_external_ip: false\n"
    args = [str(LIVEKIT_SERVER), "--dev", "--bind", "127.0.0.1", "--node-ip", "127.0.0.1", "--config-body", config]
    managed, _ = _spawn("livekit-server", args, ready="starting LiveKit server", timeout=timeout)
    url = f"ws://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:  # the log line comes before the port listens
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if managed.process.poll() is not None or time.monotonic() > deadline:
                raise managed.start_failed("never listened") from None
            time.sleep(0.1)
    return LiveKitServer(url, LIVEKIT_DEV_KEY, LIVEKIT_DEV_SECRET, managed)


@dataclass
class OpenAIStandin:
    """The OpenAI stand-in (``python -m devtools.openai_standin``); ``base_url`` ends in ``/v1``."""

    base_url: str
    managed: ManagedProcess

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/v1")

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.root}/_standin/stats", timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def reset(self) -> None:
        httpx.post(f"{self.root}/_standin/reset", timeout=10).raise_for_status()

    def stop(self) -> None:
        self.managed.stop()


def start_openai_standin(
    *,
    stt_delay_ms: float | None = None,
    llm_ttft_ms: float | None = None,
    tts_ttfb_ms: float | None = None,
    phrases: Path | None = None,
    timeout: float = 30,
) -> OpenAIStandin:
    """Start the stand-in on a free port; a delay left ``None`` keeps its documented default."""
    args = [sys.executable, "-m", "devtools.openai_standin", "--port", "0"]
    for flag, value in (
        ("--stt-delay-ms", stt_delay_ms),
        ("--llm-ttft-ms", llm_ttft_ms),
        ("--tts-ttfb-ms", tts_ttfb_ms),
    ):
        if value is not None:
            args += [flag, str(value)]
    if phrases is not None:
        args += ["--phrases", str(phrases)]
    managed, line = _spawn("openai-standin", args, ready="ready http://", timeout=timeout)
    return OpenAIStandin(base_url=line.split("ready ", 1)[1].strip(), managed=managed)
