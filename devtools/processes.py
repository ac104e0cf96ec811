"""Start and stop the local services as child processes on free loopback ports."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
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
    _wait_listening(managed, port, timeout)  # the log line comes before the port listens
    return LiveKitServer(f"ws://127.0.0.1:{port}", LIVEKIT_DEV_KEY, LIVEKIT_DEV_SECRET, managed)


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


# --- A LiveKit cluster: N livekit-server nodes sharing one redis-server, behind HAProxy ---

CLUSTER_KEY = "clusterkey"
CLUSTER_SECRET = "cluster-secret-of-at-least-32-characters"
"""livekit-server without ``--dev`` logs an error for a secret under 32 characters."""
HAPROXY_BACKEND = "livekit"
HEALTH_CHECK_INTERVAL_MS = 500
"""HAProxy asks each node ``GET /`` this often; 2 failures mark it down, 2 successes up."""


def _wait_listening(managed: ManagedProcess, port: int, timeout: float) -> None:
    """Return once ``port`` accepts connections; the process dying or ``timeout`` fails."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if managed.process.poll() is not None or time.monotonic() > deadline:
                raise managed.start_failed("never listened") from None
            time.sleep(0.1)


@dataclass
class LiveKitNode:
    """One node of the cluster: its own HTTP and RTC ports, routing through the shared Redis.
    ``node_id`` changes on every start (livekit-server makes a new one)."""

    name: str
    port: int
    rtc_tcp_port: int
    rtc_udp_port: int
    redis_url: str
    node_id: str = ""
    managed: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.managed is not None and self.managed.process.poll() is None

    def start(self, timeout: float = 60) -> None:
        """Start (or restart, on the same ports) this node; returns once it listens."""
        redis_address = self.redis_url.removeprefix("redis://").split("/", 1)[0]
        config = (
            f"port: {self.port}\n"
            f"rtc:\n  tcp_port: {self.rtc_tcp_port}\n  udp_port: {self.rtc_udp_port}\n  use_external_ip: false\n"
            f"redis:\n  address: {redis_address}\n"
            f"keys:\n  {CLUSTER_KEY}: {CLUSTER_SECRET}\n"
        )
        args = [str(LIVEKIT_SERVER), "--bind", "127.0.0.1", "--node-ip", "127.0.0.1", "--config-body", config]
        managed, line = _spawn(self.name, args, ready="starting LiveKit server", timeout=timeout)
        _wait_listening(managed, self.port, timeout)
        self.managed = managed
        self.node_id = line.split('"nodeID": "', 1)[1].split('"', 1)[0]

    def kill(self) -> None:
        """SIGKILL the node's process group, as a crashed host: nothing is closed cleanly."""
        if self.managed is not None and self.managed.process.poll() is None:
            os.killpg(self.managed.process.pid, signal.SIGKILL)
            self.managed.process.wait(10)

    def stop(self) -> None:
        if self.managed is not None:
            self.managed.stop()


@dataclass
class HAProxy:
    """HAProxy in front of the nodes: HTTP health checks, WebSocket upgrades passed through,
    round robin; its admin socket changes a node's state at run time."""

    port: int
    admin_socket: Path
    managed: ManagedProcess

    def command(self, line: str) -> str:
        """One command on the runtime API (``show stat``, ``set server ... state ...``)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.admin_socket))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def set_admin_state(self, node: str, state: str) -> None:
        """``ready``, ``drain`` or ``maint``: a node in ``maint`` gets no new connection;
        connections already made to it stay."""
        answer = self.command(f"set server {HAPROXY_BACKEND}/{node} state {state}").strip()
        if answer:
            raise ServiceStartError(f"haproxy refused to set {node} {state}: {answer}")

    def statuses(self) -> dict[str, str]:
        """Each node's status as HAProxy sees it (``UP``, ``DOWN``, ``MAINT``, ``UP 1/2``...)."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        found = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == HAPROXY_BACKEND and row.get("svname") not in ("BACKEND", None):
                found[row["svname"]] = row.get("status", "")
        return found

    def wait_status(self, node: str, status: str, timeout: float = 30) -> float:
        """Seconds until HAProxy reports ``node`` as ``status``; raises on ``timeout``."""
        started = time.monotonic()
        while (seen := self.statuses().get(node)) != status:
            if time.monotonic() - started > timeout:
                raise ServiceStartError(f"haproxy: {node} is {seen!r}, not {status!r} after {timeout} s")
            time.sleep(0.05)
        return time.monotonic() - started

    def stop(self) -> None:
        self.managed.stop()


def haproxy_config(port: int, admin_socket: Path, nodes: list[LiveKitNode]) -> str:
    """``timeout tunnel`` keeps upgraded WebSockets (workers, callers) open past the HTTP
    timeouts; ``option redispatch`` + ``retries`` send a connection a dead node refused to
    another node, so a reconnect never waits for the health check to mark it down;
    ``retry-on empty-response`` sends again an API request whose node died before it
    answered (the server API's requests go through the load balancer too)."""
    servers = "\n".join(f"    server {n.name} 127.0.0.1:{n.port}" for n in nodes)
    return f"""global
    stats socket {admin_socket} level admin
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    option redispatch
    retries 3
    retry-on conn-failure empty-response
frontend livekit_in
    bind 127.0.0.1:{port}
    default_backend {HAPROXY_BACKEND}
backend {HAPROXY_BACKEND}
    balance roundrobin
    option httpchk GET /
    http-check expect status 200
    default-server check inter {HEALTH_CHECK_INTERVAL_MS}ms fall 2 rise 2
{servers}
"""


def start_haproxy(nodes: list[LiveKitNode], directory: Path, timeout: float = 20) -> HAProxy:
    binary = shutil.which("haproxy")
    if binary is None:
        raise ServiceStartError("haproxy is not installed (apt-get install haproxy)")

    def start() -> HAProxy:
        port = free_port()
        admin_socket = directory / "haproxy.sock"
        config = directory / "haproxy.cfg"
        config.write_text(haproxy_config(port, admin_socket, nodes), encoding="utf-8")
        process = subprocess.Popen(
            [binary, "-db", "-f", str(config)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        managed = ManagedProcess("haproxy", process)

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                managed.output.append(line.rstrip())
                del managed.output[:-200]

        threading.Thread(target=pump, name="haproxy-output", daemon=True).start()
        _wait_listening(managed, port, timeout)  # haproxy -db prints nothing when ready
        proxy = HAProxy(port, admin_socket, managed)
        for node in nodes:
            if node.running:
                proxy.wait_status(node.name, "UP", timeout)
        return proxy

    return _on_free_ports(start)


@dataclass
class LiveKitCluster:
    """One redis-server, N livekit-server nodes routing through it, HAProxy in front."""

    redis: RedisServer
    nodes: list[LiveKitNode]
    haproxy: HAProxy
    directory: Path
    owns_redis: bool = True
    """Whether ``stop`` stops the redis-server too (it does when the cluster started it)."""

    @property
    def url(self) -> str:
        """The one address workers, callers and the server API use: the load balancer."""
        return f"ws://127.0.0.1:{self.haproxy.port}"

    @property
    def endpoint(self) -> LiveKitServer:
        """The load balancer as the ``LiveKitServer`` the existing helpers take (its
        ``stop`` stops HAProxy only)."""
        return LiveKitServer(self.url, CLUSTER_KEY, CLUSTER_SECRET, self.haproxy.managed)

    def node_endpoint(self, index: int) -> LiveKitServer:
        """One node's own address, bypassing the load balancer."""
        node = self.nodes[index]
        assert node.managed is not None, f"{node.name} never started"
        return LiveKitServer(node.url, CLUSTER_KEY, CLUSTER_SECRET, node.managed)

    def room_nodes(self) -> dict[str, str]:
        """Room name -> the id of the node hosting it (livekit-server's ``room_node_map``)."""
        import redis as redis_sync

        client = redis_sync.Redis.from_url(self.redis.url, decode_responses=True)
        try:
            return {str(k): str(v) for k, v in client.hgetall("room_node_map").items()}
        finally:
            client.close()

    def node_named(self, node_id: str) -> LiveKitNode | None:
        return next((n for n in self.nodes if n.node_id == node_id), None)

    @contextlib.contextmanager
    def only_through(self, index: int) -> Iterator[None]:
        """While inside, HAProxy sends new connections to node ``index`` only (the others
        in ``maint``); connections made meanwhile stay where they are afterwards. How a
        worker is first registered on a chosen node while its URL is the load balancer's."""
        others = [n for i, n in enumerate(self.nodes) if i != index and n.running]
        for node in others:
            self.haproxy.set_admin_state(node.name, "maint")
        try:
            yield
        finally:
            for node in others:
                self.haproxy.set_admin_state(node.name, "ready")
            for node in others:
                self.haproxy.wait_status(node.name, "UP")

    def kill_node(self, index: int) -> None:
        self.nodes[index].kill()

    def restart_node(self, index: int, timeout: float = 60) -> float:
        """Start node ``index`` again on its ports; seconds until HAProxy has it UP."""
        node = self.nodes[index]
        node.start(timeout)
        return self.haproxy.wait_status(node.name, "UP", timeout)

    def stop(self) -> None:
        self.haproxy.stop()
        for node in self.nodes:
            node.stop()
        if self.owns_redis:
            self.redis.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_cluster(nodes: int = 2, redis: RedisServer | None = None, timeout: float = 60) -> LiveKitCluster:
    """A real cluster on loopback: ``redis`` (or a new redis-server, then owned by the
    cluster), ``nodes`` livekit-server nodes on free ports, HAProxy with every node UP."""
    if not LIVEKIT_SERVER.exists():
        raise ServiceStartError(f"{LIVEKIT_SERVER} is missing: run `make livekit-server`")
    if nodes < 1:
        raise ValueError("a cluster needs at least one node")
    owned = redis or start_redis()
    directory = Path(tempfile.mkdtemp(prefix="livekit-cluster-"))
    started: list[LiveKitNode] = []
    try:
        for i in range(nodes):

            def start_node(name: str = f"node{i + 1}") -> LiveKitNode:
                node = LiveKitNode(name, free_port(), free_port(), free_port(), owned.url)
                node.start(timeout)
                return node

            started.append(_on_free_ports(start_node))
        proxy = start_haproxy(started, directory, timeout)
    except BaseException:
        for node in started:
            node.stop()
        if redis is None:
            owned.stop()
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return LiveKitCluster(owned, started, proxy, directory, owns_redis=redis is None)


@dataclass
class WorkerHost:
    """A worker host by its real command (``python -m agent start``), for the cluster CLI
    and benchmark; ``events`` keeps, with their arrival time (``time.monotonic``), the log
    events those read: its registrations (one per connection) and its jobs' starts."""

    name: str
    managed: ManagedProcess
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    def registrations(self) -> list[float]:
        return [at for at, event in self.events if event.get("event") == "registered worker"]

    def jobs_started(self) -> list[dict[str, Any]]:
        return [event for _, event in self.events if event.get("event") == "job_started"]

    def stop(self) -> None:
        self.managed.stop()


WORKER_HOST_EVENTS = ("registered worker", "job_started")


def start_worker_host(
    name: str, livekit: LiveKitServer, env: dict[str, str], *, echo: bool = False, timeout: float = 90
) -> WorkerHost:
    """Start a worker on ``livekit`` (``env`` over this environment; ``LOG_FORMAT=json`` is
    what ``events`` reads) and return once it registered; ``echo`` prints its output."""
    full_env = {
        **os.environ,
        "AGENT_HTTP_PORT": "0",  # several workers on one host
        **env,
        "LIVEKIT_URL": livekit.url,
        "LIVEKIT_API_KEY": livekit.api_key,
        "LIVEKIT_API_SECRET": livekit.api_secret,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", "start"],
        cwd=REPO,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    host = WorkerHost(name, ManagedProcess(name, process))
    registered = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            host.managed.output.append(line.rstrip())
            del host.managed.output[:-200]
            if echo:
                print(f"[{name}] {line.rstrip()}", flush=True)
            if any(f'"event": "{e}"' in line for e in WORKER_HOST_EVENTS):
                with contextlib.suppress(ValueError):
                    host.events.append((time.monotonic(), json.loads(line)))
            if "registered worker" in line:
                registered.set()

    threading.Thread(target=pump, name=f"{name}-output", daemon=True).start()
    deadline = time.monotonic() + timeout
    while not registered.wait(0.1):
        if process.poll() is not None or time.monotonic() > deadline:
            raise host.managed.start_failed("never registered")
    return host
