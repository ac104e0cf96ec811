"""Agent configuration for the worker: the service, its errors and its result types."""

from services.agent_config import AgentConfigService
from services.errors import (
    AgentConfigError,
    AgentNotFoundError,
    ConfigUnavailableError,
    InvalidAgentIdError,
)
from services.records import AgentConfig, PromptResult
from services.settings import ServiceSettings, SettingsError

__all__ = [
    "AgentConfig",
    "AgentConfigError",
    "AgentConfigService",
    "AgentNotFoundError",
    "ConfigUnavailableError",
    "InvalidAgentIdError",
    "PromptResult",
    "ServiceSettings",
    "SettingsError",
]
