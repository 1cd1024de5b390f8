"""The one Settings object. Every value can come from a `CARELOOP_*` environment variable or `.env`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from careloop.errors import ConfigError


class Settings(BaseSettings):
    """careloop settings. `CARELOOP_DATABASE_URL=postgresql://...` switches the store."""

    model_config = SettingsConfigDict(env_prefix="CARELOOP_", env_file=".env", extra="ignore")

    database_url: str = Field(
        "duckdb:///careloop.duckdb",
        description="duckdb:///PATH (embedded, default), duckdb:///:memory: or postgresql://USER@HOST/DB",
    )
    workspace: str = Field("default", description="workspace (tenant) commands act in")
    key_file: Path = Field(
        Path(".careloop/keys.json"),
        description="field-encryption keys (created on first use in dev); never stored in the database",
    )
    environment: str = Field("dev", description="dev | test | prod; prod refuses to create keys itself")
    timezone: str = Field("Asia/Shanghai", description="default local time zone of patients and sources")
    log_level: str = "INFO"
    ingest_chunk_rows: int = Field(
        500_000, ge=1000, description="rows validated and written per chunk during ingestion"
    )
    survivorship_file: Path | None = Field(
        None,
        description="golden-record survivorship rules (YAML, see docs/golden-record-and-households.md); "
        "default: the rules shipped with careloop",
    )
    stream: str = Field(
        "inprocess",
        description="how stored events reach the processors: inprocess (embedded) or redis (multi-process)",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis for CARELOOP_STREAM=redis")
    events_max_pending: int = Field(
        50_000, ge=100, description="events waiting for their durable write before requests get 503"
    )
    events_batch: int = Field(5_000, ge=1, description="most events committed in one group commit")
    events_processor: bool = Field(
        True,
        description="run the stream processor inside `careloop serve` (off: run `careloop events process`)",
    )
    journeys_worker: bool = Field(
        True,
        description="run the journey worker inside `careloop serve` (off: run `careloop worker` separately)",
    )
    serve_wal_mb: int = Field(
        1024,
        ge=16,
        description="embedded server: write-ahead log size that forces a checkpoint while busy; "
        "below it, checkpoints wait for a quiet second (a checkpoint pauses every write)",
    )
    quiet_hours: str = Field(
        "21:00-08:00",
        description="no marketing sends in this local-time window (HH:MM-HH:MM; empty for none)",
    )
    quiet_hours_exempt: list[str] = Field(
        default_factory=lambda: ["service"],
        description="message purposes quiet hours do not hold back (e.g. appointment reminders the patient asked for)",
    )
    cap_per_day: int = Field(
        2, ge=0, description="most messages per patient per local day, all journeys together"
    )
    cap_per_week: int = Field(
        6, ge=0, description="most messages per patient in 7 days, all journeys together"
    )
    cap_exempt: list[str] = Field(
        default_factory=lambda: ["service"], description="message purposes the frequency caps do not count"
    )
    channels_file: Path | None = Field(
        None,
        description="YAML routing each channel kind (sms, wechat, app_push, email, outbox) to a channel plugin "
        "and its settings (docs/channels.md); default: every kind goes to the outbox",
    )
    public_url: str = Field(
        "http://127.0.0.1:8000", description="where patients reach this server (e-mail unsubscribe links)"
    )
    sms_sign_name: str = Field(
        "careloop", description="the SMS signature 【…】 added to texts without one: set your registered 签名"
    )
    send_max_attempts: int = Field(5, ge=1, description="delivery attempts before a send is dead-lettered")
    models_dir: Path = Field(
        Path(".careloop/models"),
        description="fitted models with their cards (config, versions, data hash, report); one folder per workspace",
    )
    auth_jwt_secret: SecretStr | None = Field(
        None,
        description="HS256 signing key of console tokens (32+ characters); default: derived from the key ring. "
        "Never stored in the database",
    )
    auth_token_minutes: int = Field(15, ge=1, le=60, description="lifetime of a console access token")
    auth_session_hours: int = Field(
        8, ge=1, le=24, description="how long after signing in a token may still be refreshed"
    )
    auth_max_failures: int = Field(5, ge=1, description="failed sign-ins for a user name before it is locked")
    auth_lockout_seconds: int = Field(
        60,
        ge=1,
        description="first lock after too many failed sign-ins; doubles with each further failure (≤ 1 h)",
    )
    dsr_due_days: int = Field(
        15,
        ge=1,
        le=30,
        description="days a data-subject request is due after receipt (PIPL Art 50: promptly; 15 days is the "
        "practice of the GB/T 35273 specification and regulators' app inspections)",
    )
    retention_file: Path | None = Field(
        None, description="retention rules (YAML); default: careloop's (src/careloop/privacy/retention.yaml)"
    )
    export_k: int = Field(
        10, ge=2, description="k-anonymity of aggregate exports: cells of fewer persons are suppressed"
    )
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    benchmarks_file: Path = Path("docs/benchmarks.md")

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if not v.startswith(("duckdb://", "postgresql://", "postgres://", "postgresql+psycopg://")):
            raise ConfigError(
                f"CARELOOP_DATABASE_URL must start with duckdb:// or postgresql:// (got {v.split(':')[0]}://)"
            )
        return v


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
