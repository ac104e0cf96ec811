"""What every PROCESS-mode job process needs, built once in livekit-agents' forkserver.

livekit-agents forks each job process from a forkserver that imported the modules listed
in ``preload_modules`` (the worker lists this one). A job process then starts with them
in copy-on-write memory instead of importing and building them itself, which on a busy
host is most of a job process's start-up CPU:

- what a job process runs, the job (``agent.job``) and its prewarm
  (``agent.prewarm.job_process``), and all they import (services, tiers, clients):
  about 270 ms of imports per process;
- the TLS contexts built per process on a job's way to its first call (the service's
  Convex client; livekit-agents' HTTP session, which ``JobContext.api`` opens for the
  room check): 15-35 ms each on an idle host, 100-250 ms during a burst;
- the production session's local VAD and end-of-turn weights (``load_local_models``);
- what livekit-agents loads lazily on every job's path: the modules ``AgentActivity.start``
  and the session report import on first use, and the validators of its chat models,
  which pydantic builds the first time one is made; and the session factory that
  ``AGENT_MODEL_FACTORY`` names. A profile of job processes (py-spy, simulate mode) showed
  these as ~10% of a job process's CPU.

Only pure, thread-free state belongs here: the forkserver forks, so a thread, a loop or
a connection made here would be copied dead into every job process (the service and its
loop are built in each job process's ``prewarm``).
"""

from __future__ import annotations

import contextlib
import os
from typing import get_args

from livekit.agents import llm
from livekit.agents.llm import async_toolset  # noqa: F401 - imported by every AgentActivity.start
from livekit.agents.utils import http_context
from livekit.agents.voice import report  # noqa: F401 - imported by the report made at every session's end

# Imported for their side effect: what every job process runs, loaded once.
import agent.job  # the job's module
import agent.prewarm.job_process  # noqa: F401 - the prewarm every job process runs first
from agent.prewarm.local_models import load_local_models
from agent.sessions.factory import ModelFactoryError, load_session_factory
from agent.settings import DEFAULT_MODEL_FACTORY, current_model_factory
from services import metrics
from services.records import PromptSource
from services.tls import client_ssl_context

client_ssl_context()
# Every session sets its instructions as a system ChatMessage in a ChatContext.
llm.ChatContext([llm.ChatMessage(role="system", content=["warm-up"])])
# The forkserver inherits the worker's environment. A factory that cannot load is the
# job's to report (it fails the call with a clear error); the warm-up must not stop the forkserver.
_factory = current_model_factory(os.environ.get("AGENT_MODEL_FACTORY", DEFAULT_MODEL_FACTORY))
with contextlib.suppress(ModelFactoryError):
    load_session_factory(_factory)
if _factory == DEFAULT_MODEL_FACTORY:
    # The production session's local VAD and end-of-turn model (~250 MB), shared
    # copy-on-write by every job process instead of loaded by each.
    load_local_models()
for _source in get_args(PromptSource):  # the children a resolution records
    metrics.resolve_histogram(_source)
    metrics.resolution_counter(_source, False)
    metrics.resolution_counter(_source, True)
# livekit-agents caches this context per process (functools.cache); it is the one every
# job's http_session() uses. Not public API: pinned with livekit-agents (tests check it).
http_context._create_ssl_context()
