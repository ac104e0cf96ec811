"""The service's settings, read from the environment when the service is built."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(ValueError):
    """The environment does not describe a usable configuration; the message says why."""

    @classmethod
    def from_validation(cls, what: str, exc: ValidationError) -> SettingsError:
        """pydantic's report as one readable line naming each variable."""
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        return cls(f"invalid {what} settings: {problems}")


class ServiceSettings(BaseSettings):
    """Every variable ``AgentConfigService.from_env()`` reads (see ``.env.example``)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True, env_ignore_empty=True)

    convex_url: str | None = Field(default=None, alias="CONVEX_URL")
    """Deployment URL. Unset: agents come from ``agents_file`` (embedded store)."""
    convex_deploy_key: SecretStr | None = Field(default=None, alias="CONVEX_DEPLOY_KEY", repr=False)
    """Sent as ``Authorization: Convex <key>``; every agent function is internal."""
    max_entries: int = Field(default=500, ge=1, alias="PROMPT_CACHE_MAX_ENTRIES")
    """RAM tier bound (LRU)."""
    ttl_seconds: float = Field(default=600.0, gt=0, alias="PROMPT_CACHE_TTL_SECONDS")
    """How long a version stays unquestioned after the store last confirmed it."""
    refresh_seconds: float = Field(default=2.0, gt=0, alias="PROMPT_REFRESH_SECONDS")
    """Poll interval of the version refresher: the bound on how late an edit is seen."""
    stale_if_error_seconds: float = Field(default=86_400.0, ge=0, alias="PROMPT_STALE_IF_ERROR_SECONDS")
    """How long past confirmation a cached prompt may still be served while the store fails."""
    not_found_ttl_seconds: float = Field(default=30.0, ge=0, alias="PROMPT_NOT_FOUND_TTL_SECONDS")
    """Negative cache for unknown agents."""
    convex_timeout_seconds: float = Field(default=2.0, gt=0, alias="CONVEX_TIMEOUT_SECONDS")
    """Per request; a cold lookup gives up after three times this."""
    redis_url: SecretStr | None = Field(default=None, alias="PROMPT_CACHE_REDIS_URL", repr=False)
    """``redis://[:password@]host:port/db``; unset means no shared tier. A secret: it may
    carry a password, so it is never logged or echoed in an error."""
    host_cache_dir: Path | None = Field(default=None, alias="PROMPT_HOST_CACHE_DIR")
    """PROCESS executor: the host tier's LMDB directory (``services/tiers/host_owner.py``), written
    by the worker's main process, read by its job processes. Unset: a per-worker directory
    under the system temp dir, removed when the worker exits."""
    agents_file: Path | None = Field(default=None, alias="AGENTS_FILE")
    """Embedded store used when ``CONVEX_URL`` is unset, and then required: the wheel ships
    no agents file, so a default would name a path that exists only in a checkout (the dev
    stack passes the demo agents explicitly)."""

    @model_validator(mode="after")
    def _convex_needs_key(self) -> ServiceSettings:
        if self.convex_url and not self.convex_deploy_key:
            raise ValueError("CONVEX_URL is set but CONVEX_DEPLOY_KEY is not: agent functions are internal")
        if self.convex_url:
            check_convex_url(self.convex_url)
        elif self.agents_file is None:
            raise ValueError("AGENTS_FILE is required when CONVEX_URL is unset: it names the embedded store's file")
        if self.redis_url:
            check_redis_url(self.redis_url.get_secret_value())
        return self

    @classmethod
    def from_env(cls) -> ServiceSettings:
        """Build from the environment, turning pydantic's report into one readable line."""
        try:
            return cls()
        except ValidationError as exc:
            raise SettingsError.from_validation("service", exc) from None


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_convex_url(url: str) -> None:
    """The deploy key goes in every request: never in clear text off this machine."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("CONVEX_URL must be http(s)://host[:port]")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(
            "CONVEX_URL uses plain http:// to a host that is not loopback: the deploy key would travel "
            "in clear text; use https://"
        )


def check_redis_url(url: str) -> None:
    """Host, port and db of ``redis[s]://[:password@]host[:port][/db]``; messages never
    repeat the URL (it may carry a password)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError("PROMPT_CACHE_REDIS_URL must start with redis:// or rediss://")
    if not parts.hostname:
        raise ValueError("PROMPT_CACHE_REDIS_URL has no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("PROMPT_CACHE_REDIS_URL has a port that is not a number from 1 to 65535") from None
    if port is not None and not 1 <= port <= 65535:
        raise ValueError("PROMPT_CACHE_REDIS_URL has a port that is not a number from 1 to 65535")
    db = parts.path.lstrip("/")
    if db and not (db.isascii() and db.isdigit()):
        raise ValueError("PROMPT_CACHE_REDIS_URL has a database that is not a number (redis://host:port/0)")
    if parts.query or parts.fragment:
        raise ValueError("PROMPT_CACHE_REDIS_URL must not carry a query or fragment")
