"""The worker's settings, read from the environment at start-up (see ``.env.example``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

import structlog
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.settings import SettingsError

log = structlog.get_logger(__name__)

DEFAULT_MODEL_FACTORY = "agent.sessions.openai:openai_session"
RENAMED_MODEL_FACTORIES = {"agent.models:openai_session": DEFAULT_MODEL_FACTORY}
"""Specs ``AGENT_MODEL_FACTORY`` accepted before a factory moved, and where it is now:
env files written for an earlier release keep working."""


def current_model_factory(spec: str) -> str:
    """``spec`` as the factory's current ``module:function``: an old spec is mapped to its
    new place, any other is returned as given."""
    return RENAMED_MODEL_FACTORIES.get(spec, spec)


def warn_renamed_settings(environ: Mapping[str, str]) -> None:
    """Log each renamed value the environment still uses, once, at the worker's start
    (job processes map it silently: the worker has said it)."""
    spec = environ.get("AGENT_MODEL_FACTORY", "")
    if spec in RENAMED_MODEL_FACTORIES:
        log.warning("setting_renamed", setting="AGENT_MODEL_FACTORY", old=spec, new=RENAMED_MODEL_FACTORIES[spec])


def parse_organizations(value: str | None) -> frozenset[str] | None:
    """``"org_a, org_b"`` -> the set; unset or blank -> ``None`` (every organization)."""
    if value is None or not value.strip():
        return None
    names = frozenset(part.strip() for part in value.split(",") if part.strip())
    return names or None


def server_api_url(livekit_url: str) -> str:
    """The server API's URL for a worker's ``LIVEKIT_URL`` (``ws[s]://`` -> ``http[s]://``):
    livekit-api's client wants the HTTP form of the same address."""
    return livekit_url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True, env_ignore_empty=True)

    livekit_url: str = Field(alias="LIVEKIT_URL")
    """``ws://`` or ``wss://`` URL of the LiveKit server."""
    livekit_api_key: str = Field(alias="LIVEKIT_API_KEY")
    livekit_api_secret: SecretStr = Field(alias="LIVEKIT_API_SECRET", repr=False)
    agent_name: str = Field(default="", alias="AGENT_NAME")
    """Set: the worker takes explicit dispatches for this name only. Empty: every new room."""
    executor: Literal["thread", "process"] = Field(default="thread", alias="AGENT_EXECUTOR")
    """``thread``: jobs share the process, so they share the RAM tier. ``process``: a fresh
    process per job (isolation); only the Redis tier lets such a job skip Convex."""
    room_name_pattern: str | None = Field(default=None, alias="ROOM_NAME_PATTERN")
    """Regex with a named group ``agent_id``; unset: ``agent-<agentId>[--<suffix>]``."""
    model_factory: str = Field(default=DEFAULT_MODEL_FACTORY, alias="AGENT_MODEL_FACTORY")
    """``module:function`` turning a PromptResult into a session plan (the model seam)."""
    openai_api_key: SecretStr | None = Field(default=None, alias="OPENAI_API_KEY", repr=False)
    openai_base_url: str | None = Field(default=None, alias="OPENAI_BASE_URL")
    """Another OpenAI-compatible endpoint (the local stand-in in dev). The OpenAI client
    reads it from the environment itself; it is checked here so a typo stops the start."""
    connect_concurrency: int = Field(default=1, ge=1, le=64, alias="AGENT_CONNECT_CONCURRENCY")
    """THREAD executor: room connects that may run at once in the worker's process
    (``agent.connect.gate``)."""
    greeting_cache: bool = Field(default=True, alias="AGENT_GREETING_CACHE")
    """Synthesize each agent version's greeting once and play it from the cache (the
    production model factory only); false: every call speaks it through the live TTS."""
    job_start_timeout_seconds: float = Field(default=20.0, gt=0, alias="JOB_START_TIMEOUT_SECONDS")
    """A job that cannot resolve its prompt, connect and start its session within this ends."""
    max_jobs: int | None = Field(default=None, ge=1, alias="AGENT_MAX_JOBS")
    """Jobs this worker runs at once. Unset: measured slots per CPU for the executor
    (``agent.admission.capacity.default_max_jobs``)."""
    target_load: float = Field(default=0.7, gt=0, le=1, alias="AGENT_TARGET_LOAD")
    """livekit-server's ``agents.target_load`` (0.7 unless its config says otherwise): the
    worker reports exactly this load when all its job slots are in use."""
    cpu_saturation: float = Field(default=0.95, gt=0, alias="AGENT_CPU_SATURATION")
    """Host CPU share (0..1) which, held as a 30 s mean, stops new jobs. Above 1: never."""
    http_port: int | None = Field(default=None, ge=0, le=65535, alias="AGENT_HTTP_PORT")
    """livekit-agents' health-check HTTP server (``/`` and ``/worker``). Unset: its default
    (8081 for ``start``, any free port for ``dev``); 0: any free port."""
    prometheus_port: int | None = Field(default=None, alias="PROMETHEUS_PORT")
    log_format: Literal["auto", "json", "console"] = Field(default="auto", alias="LOG_FORMAT")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(default="INFO", alias="LOG_LEVEL")
    """For the project's events and livekit-agents' records alike (replaces ``--log-level``)."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_any_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    agent_organizations: str | None = Field(default=None, alias="AGENT_ORGANIZATIONS")
    """Comma-separated organization ids whose agents this worker serves; unset: all (warned
    at start). See ``agent/admission/tenancy.py``."""

    @property
    def organizations(self) -> frozenset[str] | None:
        return parse_organizations(self.agent_organizations)

    @field_validator("livekit_url")
    @classmethod
    def _url_scheme(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://", "http://", "https://")):
            raise ValueError("must start with ws://, wss://, http:// or https://")
        return value

    @field_validator("model_factory")
    @classmethod
    def _current_factory(cls, value: str) -> str:
        return current_model_factory(value)

    @field_validator("openai_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("room_name_pattern")
    @classmethod
    def _pattern_has_agent_id(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        if "agent_id" not in compiled.groupindex:
            raise ValueError("needs a named group (?P<agent_id>...)")
        return value

    @classmethod
    def from_env(cls) -> WorkerSettings:
        try:
            settings = cls()  # type: ignore[call-arg]  # values come from the environment
        except ValidationError as exc:
            raise SettingsError.from_validation("worker", exc) from None
        if settings.model_factory == DEFAULT_MODEL_FACTORY and settings.openai_api_key is None:
            raise SettingsError("invalid worker settings: OPENAI_API_KEY is required by the OpenAI model factory")
        return settings
