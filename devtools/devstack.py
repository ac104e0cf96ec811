"""``make worker``: the worker on embedded defaults, for a fresh machine.

Whatever can be embedded is: with LIVEKIT_URL unset a ``livekit-server --dev`` is
started on 127.0.0.1:7880 (from .tools, see the Makefile); with CONVEX_URL unset the
agents come from the embedded file (AGENTS_FILE, the demo agents by default). The
models cannot be embedded: set OPENAI_API_KEY, or AGENT_MODEL_FACTORY to try the
worker text-only without OpenAI. Then ``python -m agent dev`` runs in the foreground.
"""

from __future__ import annotations

import os
import subprocess
import sys

from devtools.processes import LiveKitServer, ServiceStartError, start_livekit


def main() -> int:
    env = dict(os.environ)
    livekit: LiveKitServer | None = None
    if not env.get("LIVEKIT_URL"):
        try:
            livekit = start_livekit(port=7880)
        except ServiceStartError as exc:
            print(f"devstack: {exc}", file=sys.stderr)
            return 1
        env |= {
            "LIVEKIT_URL": livekit.url,
            "LIVEKIT_API_KEY": livekit.api_key,
            "LIVEKIT_API_SECRET": livekit.api_secret,
        }
        print(f"devstack: livekit-server --dev on {livekit.url} (key devkey, secret secret)", flush=True)
    if not env.get("CONVEX_URL"):
        print("devstack: CONVEX_URL unset, agents come from the embedded agents file", flush=True)
    print("devstack: create a test room with `.venv/bin/python -m devtools.devroom Priya`", flush=True)
    try:
        return subprocess.call([sys.executable, "-m", "agent", "dev"], env=env)
    except KeyboardInterrupt:
        return 130
    finally:
        if livekit is not None:
            livekit.stop()


if __name__ == "__main__":
    raise SystemExit(main())
