"""Which store the service reads: Convex when ``CONVEX_URL`` is set, else the embedded
agents file. The factory runs on the service loop, where the clients must be made."""

from __future__ import annotations

from collections.abc import Callable

from services.settings import ServiceSettings, SettingsError
from services.store.convex import ConvexAgentStore
from services.store.convex_client import ConvexHttpClient
from services.store.file import FileAgentStore
from services.store.protocol import AgentStore

StoreFactory = Callable[[], AgentStore]


def default_store_factory(settings: ServiceSettings) -> StoreFactory:
    if settings.convex_url:
        url = settings.convex_url
        key = settings.convex_deploy_key.get_secret_value() if settings.convex_deploy_key else ""
        timeout = settings.convex_timeout_seconds
        return lambda: ConvexAgentStore(ConvexHttpClient(url, key, timeout_seconds=timeout))
    path = settings.agents_file
    if path is None:  # ServiceSettings refuses this at start-up; here it narrows the type
        raise SettingsError("AGENTS_FILE is not set: the embedded store needs it when CONVEX_URL is unset")
    return lambda: FileAgentStore(path)
