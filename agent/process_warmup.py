"""What every PROCESS-mode job process needs, built once in livekit-agents' forkserver.

livekit-agents forks each job process from a forkserver that imported the modules listed
in ``preload_modules`` (the worker lists this one). A job process then starts with them
in copy-on-write memory instead of importing and building them itself, which on a busy
host is most of a job process's start-up CPU:

- ``agent.worker``, the job's module, and all it imports (services, tiers, clients):
  about 270 ms of imports per process;
- the TLS contexts built per process on a job's way to its first call (the service's
  Convex client; livekit-agents' HTTP session, which ``JobContext.api`` opens for the
  room check): 15-35 ms each on an idle host, 100-250 ms during a burst.

Only pure, thread-free state belongs here: the forkserver forks, so a thread, a loop or
a connection made here would be copied dead into every job process (the service and its
loop are built in each job process's ``prewarm``).
"""

from __future__ import annotations

from typing import get_args

from livekit.agents.utils import http_context

import agent.worker  # noqa: F401 - imported for its side effect: the job module, loaded once
from services import metrics
from services.models import PromptSource
from services.tls import client_ssl_context

client_ssl_context()
for _source in get_args(PromptSource):  # the children a resolution records
    metrics.resolve_histogram(_source)
    metrics.resolution_counter(_source, False)
    metrics.resolution_counter(_source, True)
# livekit-agents caches this context per process (functools.cache); it is the one every
# job's http_session() uses. Not public API: pinned with livekit-agents (tests check it).
http_context._create_ssl_context()
