"""Errors a caller of :class:`~services.agent_config.AgentConfigService` can act on.

::

    AgentConfigError                 anything the service raises
    ├── InvalidAgentIdError          fix the input (room name, metadata); never retried
    ├── AgentNotFoundError           the store answered: no such agent; reject the job
    └── ConfigUnavailableError       the store failed and nothing usable is cached; retry later

    StoreError                       raised by stores and tiers, never past the service
    ├── StoreUnavailableError        transport failure, timeout, 5xx, 429: worth retrying
    └── StoreResponseError           the store answered, but not with what we asked for
        │                            (function error, malformed body): not retried
        ├── StoreAuthError           HTTP 401/403: the deploy key was refused; fix the config
        └── MalformedDocumentError   one agent's document is broken; the store itself is fine

Foreign exceptions (httpx, redis, json) are translated in exactly one place each:
``services.store.convex_client`` and ``services.tiers.redis``.
"""

from __future__ import annotations


class AgentConfigError(Exception):
    """Base of every error the service raises; ``agent_id`` names the agent."""

    def __init__(self, agent_id: str, message: str) -> None:
        super().__init__(f"agent {agent_id!r}: {message}")
        self.agent_id = agent_id


class InvalidAgentIdError(AgentConfigError):
    """The id cannot be an agent id; rejected before any I/O."""


class AgentNotFoundError(AgentConfigError):
    """The store says this agent does not exist (possibly from the negative cache)."""


class ConfigUnavailableError(AgentConfigError):
    """No trustworthy configuration could be had: the store failed and nothing is cached."""


class StoreError(Exception):
    """A store or tier failed; the service turns it into an :class:`AgentConfigError`."""


class StoreUnavailableError(StoreError):
    """The store could not be reached or did not answer in time; retrying may help."""


class StoreResponseError(StoreError):
    """The store answered with an error or with something malformed; retrying will not help."""


class StoreAuthError(StoreResponseError):
    """The store refused our credentials (HTTP 401/403: a wrong or revoked deploy key).
    Not an outage: retrying will not help, an operator must fix the key."""


def store_error_kind(exc: BaseException) -> str:
    """The ``kind`` label of ``agent_store_errors`` for a failed store call."""
    if isinstance(exc, StoreAuthError):
        return "unauthorized"
    if isinstance(exc, MalformedDocumentError):
        return "malformed"
    if isinstance(exc, StoreResponseError):
        return "response"
    return "unavailable"


class MalformedDocumentError(StoreResponseError):
    """One agent's document fails validation; other agents are unaffected."""
