"""The one typed Settings object, built once at start and passed down.

Sources, strongest first: environment variables prefixed ``MINITOOLAI_`` (nested keys with
``__``, e.g. ``MINITOOLAI_CHAT__DEFAULT_MAX_COMPLETION_TOKENS``), the TOML file named by
``MINITOOLAI_CONFIG``, then the defaults below. An unknown key or a bad value raises
ConfigError naming the key. This module is the only place that reads the environment.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from minitoolai.chat.settings import ChatSettings, ProviderSettings
from minitoolai.dashboard.settings import DashboardSettings
from minitoolai.db.settings import DatabaseSettings
from minitoolai.errors import ConfigError
from minitoolai.images.settings import ImagesSettings
from minitoolai.ledger.settings import LeaseSettings
from minitoolai.mail import SmtpSettings
from minitoolai.speech.settings import SpeechSettings

ENV_PREFIX = "MINITOOLAI_"
OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Path("./data")
    database_url: str | None = None  # default: sqlite file in data_dir
    secret_key: str | None = None  # default: generated once, shared through the database
    public_url: str | None = None  # default: http://{host}:{port}
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    # slow clients (see minitoolai/slow_clients.py): idle keep-alive, the request head, the body
    timeout_keep_alive_seconds: int = Field(5, ge=1)
    header_timeout_seconds: float = Field(10.0, gt=0)
    body_timeout_seconds: float = Field(60.0, gt=0)
    rate_limit_per_minute: int = Field(600, ge=0)  # per API key; 0 disables
    rate_limit_burst: int = Field(100, ge=1)
    hold_ttl_seconds: int = Field(900, ge=1)  # a hold older than this belongs to a dead process
    sweep_interval_seconds: float = Field(30.0, gt=0)
    auth_cache_seconds: float = Field(2.0, ge=0)  # how long a key lookup is trusted in-process
    # the largest response an Idempotency-Key keeps for replay (24 h in the database)
    idempotency_max_replay_bytes: int = Field(16 * 1024 * 1024, ge=0)
    # shared state across processes (rate limits, throttles, revocation); None: per process
    redis_url: str | None = None
    redis_key_prefix: str = "minitoolai:"  # keys and the pub/sub channel start with it
    redis_timeout_seconds: float = Field(0.25, gt=0, le=10)  # per Redis call
    redis_retry_seconds: float = Field(5.0, gt=0)  # after losing Redis, per process till then
    redis_max_connections: int = Field(50, ge=2)  # per process, the subscription's included
    # /health/ready answers 503 while Redis is lost (default: 200 "degraded", billing goes on)
    redis_required_for_ready: bool = False
    demo_account: bool = True  # `serve` creates a demo account and key on first run
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"
    log_format: Literal["text", "json"] = "text"  # json: one JSON object a line
    access_log: bool = True  # one line per request (logger minitoolai.access)
    cors_allow_origins: list[str] = Field(default_factory=list)  # empty: CORS off
    cors_max_age_seconds: int = Field(600, ge=0)  # how long browsers cache a preflight
    metrics_enabled: bool = True  # GET /metrics (Prometheus)
    metrics_token: str | None = None  # when set, /metrics needs "Bearer <token>"

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    images: ImagesSettings = Field(default_factory=ImagesSettings)
    speech: SpeechSettings = Field(default_factory=SpeechSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    leases: LeaseSettings = Field(default_factory=LeaseSettings)  # ledger/leases.py
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)  # outgoing email (mail.py)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite:///", "postgresql://",
                                                        "postgres://")):
            raise ValueError("must be sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB")
        return value.replace("postgres://", "postgresql://", 1) if value else value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://... or"
                             " unix://PATH")
        return value or None

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def _origin_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # MINITOOLAI_CORS_ALLOW_ORIGINS=https://a.example,https://b
            value = [part.strip() for part in value.split(",") if part.strip()]
        for origin in value if isinstance(value, list) else ():
            if origin != "*" and (not isinstance(origin, str) or not origin.startswith(
                    ("http://", "https://")) or origin.rstrip("/") != origin):
                raise ValueError(f"{origin!r} is not an origin: use scheme://host[:port]"
                                 " with no path or trailing slash, or \"*\"")
        return value

    @field_validator("public_url")
    @classmethod
    def _absolute_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an absolute http(s) URL, e.g. https://api.example.com")
        return value

    @field_validator("secret_key")
    @classmethod
    def _long_enough(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 16:
            raise ValueError("must be at least 16 characters (it signs job tickets)")
        return value

    # ---- derived values -------------------------------------------------------------------
    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "minitoolai.sqlite3"

    @property
    def settlement_journal_dir(self) -> Path:
        """Where settlements the database refused wait to be replayed (ledger/journal.py)."""
        return self.data_dir / "settlements"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_path.resolve()}"

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


def _env_tree(environ: Mapping[str, str]) -> dict[str, Any]:
    """Turn MINITOOLAI_A__B=v into {"a": {"b": v}} (values stay strings; pydantic coerces)."""
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        path = name[len(ENV_PREFIX):].lower().split("__")
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: conflicts with another variable")
        if value.strip().startswith(("[", "{")):
            import json

            try:
                node[path[-1]] = json.loads(value)
                continue
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{name}: not valid JSON: {exc}") from None
        node[path[-1]] = value
    return tree


def merge_dicts(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def _explain(exc: ValidationError, source: str) -> ConfigError:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown configuration key {key!r}")
        else:
            lines.append(f"{key}: {err['msg']}")
    return ConfigError(f"invalid configuration ({source}): " + "; ".join(lines))


def load_settings(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Build Settings from defaults < TOML file < environment < explicit overrides."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    config_file = environ.get(ENV_PREFIX + "CONFIG")
    if config_file:
        path = Path(config_file)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"MINITOOLAI_CONFIG: no such file {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"MINITOOLAI_CONFIG: {path} is not valid TOML: {exc}") from None
    data = merge_dicts(data, _env_tree(environ))
    if overrides:
        data = merge_dicts(data, overrides)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, config_file or "environment") from None
    _apply_openai_defaults(settings, environ)
    return settings


def _apply_openai_defaults(settings: Settings, environ: Mapping[str, str]) -> None:
    """The `openai` provider falls back on the standard OPENAI_* variables."""
    provider = settings.chat.providers.setdefault("openai", ProviderSettings())
    if provider.api_key is None:
        provider.api_key = environ.get("OPENAI_API_KEY") or None
    if provider.base_url is None:
        provider.base_url = environ.get("OPENAI_BASE_URL") or OPENAI_DEFAULT_BASE_URL


def ensure_data_dir(settings: Settings) -> None:
    """Create the data directory, or fail naming the setting."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"data_dir: cannot create {settings.data_dir}: {exc.strerror}") \
            from None
