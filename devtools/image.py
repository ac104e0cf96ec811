"""Build and run the worker's container image with buildah, where no Docker engine runs.

What works on these machines (issue 23): buildah's ``vfs`` storage driver and
``--isolation chroot``, on a base image made locally by ``debootstrap --variant=minbase
bookworm`` plus Debian's Python 3.11 (the minor version pyproject.toml targets), passed
to the Dockerfile as ``BASE_IMAGE`` in place of the official slim image. pip inside the
build trusts the host's CA bundle through a read-only mount used by the build alone.

Everything lives in the git-ignored ``.tools/image/`` (buildah's storage), so the base
and the build's layer cache survive between runs; a file lock serialises builds and the
pruning that keeps only the newest build's cache (``vfs`` stores every layer as a full
copy, so stale layers would fill the disk).

``python -m devtools.image build`` (``make image``) builds and prints the image's size.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.processes import REPO

STORE = REPO / ".tools" / "image"
BASE_TAG = "localhost/voice-agent-base:bookworm-py3.11"
IMAGE_TAG = "localhost/voice-agent-worker:latest"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# Debian's Python of the version pyproject.toml targets, with `python` and `pip` on
# PATH as the official slim image has them.
BASE_PACKAGES = ("python3.11", "python3.11-venv", "python3-pip", "python-is-python3", "ca-certificates")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
CA_IN_BUILD = "/run/host-ca.crt"
DEBOOTSTRAP_SECONDS = 600
BUILD_SECONDS = 1200
CONTEXT_LABEL = "org.voice-agent-worker.context-sha256"
ID_CHARS = 11  # the shortest id prefix buildah prints (its build output's "--> 975760e3382")
_CACHE_LINE = re.compile(r"^--> (?:Using cache )?([0-9a-f]{11,64})\b")


class ImageError(RuntimeError):
    """A buildah or debootstrap step failed; the message carries its last output lines."""


def missing_tools() -> str | None:
    """Why buildah cannot build here, or None. vfs + chroot isolation need root here."""
    for tool in ("buildah", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make system-deps)"
    if os.geteuid() != 0:
        return "buildah with vfs storage and chroot isolation needs root on this machine"
    return None


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class Buildah:
    """buildah on its own storage under ``root`` (vfs driver)."""

    root: Path = STORE

    def argv(self, *args: str) -> list[str]:
        return [
            "buildah",
            "--root", str(self.root / "storage"),
            "--runroot", str(self.root / "run"),
            "--storage-driver", "vfs",
            *args,
        ]  # fmt: skip

    def __call__(self, *args: str, timeout: float = 120) -> str:
        """Run one buildah command; its stdout, or ``ImageError`` with its output."""
        done = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise ImageError(f"buildah {args[0]} failed ({done.returncode}):\n{_tail(done.stdout + done.stderr)}")
        return done.stdout

    def exists(self, tag: str) -> bool:
        done = subprocess.run(self.argv("inspect", "--type", "image", tag), capture_output=True, check=False)
        return done.returncode == 0

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One build (or base import, or prune) at a time on this storage."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "lock", "w", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_base(buildah: Buildah, *, tag: str = BASE_TAG, mirror: str = DEBIAN_MIRROR) -> bool:
    """Make the base image unless the storage has it; True when it had to be made."""
    with buildah.locked():
        if buildah.exists(tag):
            return False
        with tempfile.TemporaryDirectory(dir=buildah.root, prefix="rootfs-") as scratch:
            rootfs = Path(scratch) / "rootfs"
            _debootstrap(rootfs, mirror)
            archive = Path(scratch) / "rootfs.tar"
            with tarfile.open(archive, "w") as tar:
                tar.add(rootfs, arcname=".")
            container = buildah("from", "scratch").strip()
            try:
                buildah("add", container, str(archive), "/", timeout=300)
                buildah(
                    "config",
                    "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "--env", "LANG=C.UTF-8",
                    "--cmd", "python3",
                    container,
                )  # fmt: skip
                buildah("commit", "--rm", container, tag, timeout=300)
            except ImageError:
                subprocess.run(buildah.argv("rm", container), capture_output=True, check=False)
                raise
        return True


def _debootstrap(rootfs: Path, mirror: str) -> None:
    args = ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", "bookworm", str(rootfs), mirror]
    done = subprocess.run(args, capture_output=True, text=True, timeout=DEBOOTSTRAP_SECONDS, check=False)
    if done.returncode != 0:
        raise ImageError(f"debootstrap failed ({done.returncode}):\n{_tail(done.stdout + done.stderr)}")
    # What the official slim image also leaves out: package archives and lists.
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (rootfs / leftover).glob("*"):
            if path.is_file():
                path.unlink()


def build_image(buildah: Buildah, *, base: str = BASE_TAG, tag: str = IMAGE_TAG, context: Path = REPO) -> bool:
    """``buildah build`` of the repo's Dockerfile on ``base``, then drop every cached
    layer this build did not use. Skipped when ``tag`` was built from this very context
    and base (its ``CONTEXT_LABEL``): with vfs even an all-cached build copies and
    deletes whole root filesystems (about two minutes here). True when it built."""
    digest = context_digest(context, base_id=_image_id(buildah, base))
    with buildah.locked():
        if buildah.exists(tag) and image_config(buildah, tag).get("Labels", {}).get(CONTEXT_LABEL) == digest:
            return False
        args = [
            "build",
            "--isolation", "chroot",
            "--layers",
            "--format", "docker",  # HEALTHCHECK exists only in Docker's image format
            "--pull=never",
            "--build-arg", f"BASE_IMAGE={base}",
            "--build-arg", f"PIP_CERT={CA_IN_BUILD}",
            "--volume", f"{HOST_CA}:{CA_IN_BUILD}:ro",
            "--label", f"{CONTEXT_LABEL}={digest}",
            "--tag", tag,
            "--file", str(context / "Dockerfile"),
            str(context),
        ]  # fmt: skip
        output = buildah(*args, timeout=BUILD_SECONDS)
        _prune(buildah, keep=_images_of(output) | {_image_id(buildah, base), _image_id(buildah, tag)})
    return True


def context_files(context: Path = REPO) -> list[Path]:
    """The files ``.dockerignore`` admits into the build context, by its rules as this
    repo writes them (ignore everything, admit named files and folders, minus bytecode)."""
    admitted = [
        line[1:].rstrip("/")
        for line in (context / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    ]
    files: list[Path] = []
    for name in admitted:
        path = context / name
        found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files += [f for f in found if "__pycache__" not in f.parts and f.suffix != ".pyc"]
    return files


def context_digest(context: Path = REPO, *, base_id: str) -> str:
    """sha256 over the Dockerfile, .dockerignore, every admitted file and the base's id."""
    digest = hashlib.sha256(base_id.encode())
    for path in [context / "Dockerfile", context / ".dockerignore", *context_files(context)]:
        digest.update(str(path.relative_to(context)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _images_of(build_output: str) -> set[str]:
    """Short ids of the images the build made or reused (its cache chain)."""
    return {m.group(1)[:ID_CHARS] for line in build_output.splitlines() if (m := _CACHE_LINE.match(line.strip()))}


def _image_id(buildah: Buildah, tag: str) -> str:
    return buildah("images", "--noheading", "--format", "{{.ID}}", tag).split()[0][:ID_CHARS]


def _prune(buildah: Buildah, keep: set[str]) -> None:
    listed = buildah("images", "--all", "--noheading", "--format", "{{.ID}} {{.Name}}:{{.Tag}}").splitlines()
    for line in listed:
        image_id, _, name = line.partition(" ")
        if image_id[:ID_CHARS] not in keep and "<none>" in name:
            # An image a container still uses stays; the next prune takes it.
            subprocess.run(buildah.argv("rmi", image_id), capture_output=True, check=False)


def image_config(buildah: Buildah, tag: str = IMAGE_TAG) -> dict[str, Any]:
    """The image's Docker config (User, Env, Cmd, Healthcheck, ExposedPorts, ...)."""
    inspected = json.loads(buildah("inspect", "--type", "image", tag))
    return dict(inspected["Docker"]["config"])


def image_size(buildah: Buildah, tag: str = IMAGE_TAG) -> str:
    """Uncompressed size as ``buildah images`` reports it (e.g. ``620 MB``)."""
    inspected = json.loads(buildah("images", "--json", tag))
    return str(inspected[0]["size"])


@dataclass(frozen=True)
class LayerEntry:
    layer: str
    path: str
    size: int
    sha256: str | None  # only for regular files of the size asked for


def layer_entries(buildah: Buildah, tag: str = IMAGE_TAG, *, hash_size: int = -1) -> list[LayerEntry]:
    """Every entry of every layer (a file a later layer deletes is still listed).
    Regular files of ``hash_size`` bytes carry their sha256."""
    entries: list[LayerEntry] = []
    with tempfile.TemporaryDirectory(dir=buildah.root, prefix="push-") as scratch:
        out = Path(scratch) / "image"
        buildah("push", "--quiet", "--disable-compression", tag, f"dir:{out}", timeout=600)
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        for layer in manifest["layers"]:
            blob = out / layer["digest"].split(":", 1)[1]
            with tarfile.open(blob) as tar:
                for member in tar:
                    digest = None
                    if member.isfile() and member.size == hash_size:
                        extracted = tar.extractfile(member)
                        digest = hashlib.sha256(extracted.read()).hexdigest() if extracted else None
                    entries.append(LayerEntry(layer["digest"], member.name, member.size, digest))
    return entries


def new_container(buildah: Buildah, tag: str = IMAGE_TAG) -> str:
    """A working container of the image (what ``buildah run`` runs in)."""
    return buildah("from", "--pull=never", tag, timeout=300).strip()


def remove_container(buildah: Buildah, container: str) -> None:
    subprocess.run(buildah.argv("rm", container), capture_output=True, check=False)


def run_argv(
    buildah: Buildah,
    container: str,
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    volumes: dict[Path, str] | None = None,
) -> list[str]:
    """``buildah run`` of ``command`` on the host's network; ``volumes`` are read-only."""
    args = ["run", "--isolation", "chroot", "--network", "host"]
    for name, value in (env or {}).items():
        args += ["--env", f"{name}={value}"]
    for host_path, target in (volumes or {}).items():
        args += ["--volume", f"{host_path}:{target}:ro"]
    return buildah.argv(*args, container, "--", *command)


def container_process(runner_pid: int) -> int | None:
    """The pid of the command a ``buildah run`` (pid ``runner_pid``) started, or None yet.

    Under chroot isolation there is no pid namespace: the command is a host process,
    the child of ``buildah-chroot-exec``. Signalling ``buildah run`` itself kills the
    command (SIGKILL), so a ``docker stop`` (SIGTERM to the container's process) is
    this pid's to receive."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    pending = [runner_pid]
    while pending:
        pid = pending.pop()
        if _command_of(pid).startswith("buildah-chroot-exec"):
            return next(iter(children.get(pid, [])), None)
        pending.extend(children.get(pid, []))
    return None


def _command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def process_uid(pid: int) -> int:
    """The real uid of a host process (``Uid:`` in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise ImageError(f"no Uid line for process {pid}")


def context_bytes(context: Path = REPO) -> int:
    """Bytes of the build context (what ``.dockerignore`` admits)."""
    return sum(path.stat().st_size for path in context_files(context))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.image", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build"])
    parser.add_argument("--tag", default=IMAGE_TAG)
    parser.add_argument("--mirror", default=DEBIAN_MIRROR, help="Debian mirror for the base (debootstrap)")
    args = parser.parse_args(argv)
    reason = missing_tools()
    if reason:
        print(f"image: {reason}", file=sys.stderr)
        return 2
    buildah = Buildah()
    started = time.monotonic()
    try:
        made = ensure_base(buildah, mirror=args.mirror)
        base_done = time.monotonic()
        built = build_image(buildah, tag=args.tag)
    except (ImageError, subprocess.TimeoutExpired) as exc:
        print(f"image: {exc}", file=sys.stderr)
        return 1
    done = time.monotonic()
    print(f"base {BASE_TAG}: {'made' if made else 'cached'} in {base_done - started:.0f} s")
    state = "built" if built else "up to date"
    print(f"image {args.tag}: {state} in {done - base_done:.0f} s, {image_size(buildah, args.tag)}")
    print(f"build context: {len(context_files())} files, {context_bytes() / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
