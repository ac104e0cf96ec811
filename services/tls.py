"""One TLS context per process for the service's HTTP clients.

Building a context parses the whole CA bundle: 15-35 ms on an idle host, 100-250 ms in
a job process starting during a burst (measured by livekit-agents' loop monitor). httpx
builds one per client, so every PROCESS-mode job process paid it on its way to its first
call. This context is built once per process, and once per worker for every job process
when the forkserver builds it (``agent.prewarm.forkserver``); an ``SSLContext`` is safe to
share between clients, threads and loops.
"""

from __future__ import annotations

import functools
import ssl

import httpx

__all__ = ["client_ssl_context"]


@functools.cache
def client_ssl_context() -> ssl.SSLContext:
    """httpx's own default context (certifi, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``),
    built once per process."""
    return httpx.create_ssl_context()
