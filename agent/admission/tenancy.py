"""The tenant boundary: which organizations' agents this worker serves.

Anyone who can name a room ``agent-<id>`` or write dispatch metadata chooses the agent,
so the worker itself must refuse agents of organizations it was not deployed for
(``AGENT_ORGANIZATIONS``). The organization is known only once the agent's config is
resolved: ``on_request`` refuses what it already knows without I/O (the agent is in
this process's RAM tier), and the job refuses the rest after resolving and before any
session starts. Logs name the organization, never the prompt.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog

from services import AgentConfigError
from services.hints import clip

log = structlog.get_logger("agent.tenancy")


class OrganizationNotServedError(AgentConfigError):
    """The agent belongs to an organization this worker does not serve."""

    def __init__(self, agent_id: str, organization_id: str) -> None:
        super().__init__(agent_id, f"organization {clip(organization_id)!r} is not served by this worker")
        self.organization_id = organization_id


def serves(organizations: Iterable[str] | None, organization_id: str) -> bool:
    return organizations is None or organization_id in organizations


def check_organization(organizations: frozenset[str] | None, agent_id: str, organization_id: str) -> None:
    if not serves(organizations, organization_id):
        raise OrganizationNotServedError(agent_id, organization_id)


def warn_if_unrestricted(organizations: frozenset[str] | None) -> None:
    if organizations is None:
        log.warning(
            "agent_organizations_unset",
            message="AGENT_ORGANIZATIONS is unset: this worker serves agents of every organization",
        )
