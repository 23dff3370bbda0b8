"""Veche's settings: one pydantic-settings object, read once at start and passed down.

Every value comes from `VECHE_*` environment variables or a `.env` file. In development
(`VECHE_ENV=dev`, the default) nothing is required: the embedded backends live under
`var/` and a signing key is generated once and kept there with 0600 permissions. In
production the object refuses to exist until every secret and URL is given explicitly,
and it names all missing or invalid ones in a single message.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Environment = Literal["dev", "test", "production"]
Role = Literal["api", "worker", "all"]

MIN_SECRET_KEY_LENGTH = 32
KIB = 1024
MIB = 1024 * KIB
DEFAULT_RATE_LIMITS = {
    "default": "600/minute",
    "auth": "20/minute;200/hour",
    "auth_refresh": "60/minute",
    "admin": "300/minute",
    # The agents app: sending a message starts an LLM run; tool results come from clients.
    "agents_messages": "20/minute",
    "agents_tools": "60/minute",
    # The blog app: writes (posts, comments, blogs) and media uploads (CPU-heavy).
    "blog_write": "120/minute",
    "blog_media": "30/minute",
    # The blog's messenger: messages sent (WebSocket and POST share it), and the typing
    # indicators and read receipts clients send over the WebSocket.
    "blog_messages": "100/minute",
    "blog_signals": "120/minute",
}


class AuthSettings(BaseModel):
    """Tokens, password hashing and login protection (`VECHE_AUTH__*`)."""

    issuer: str = "veche"
    audience: str = "veche"
    access_token_ttl_seconds: PositiveInt = 15 * 60
    refresh_token_ttl_seconds: PositiveInt = 30 * 24 * 3600
    session_max_age_seconds: PositiveInt = 90 * 24 * 3600
    clock_skew_seconds: NonNegativeInt = 30
    # Argon2id at the OWASP / ASVS profile: 19 MiB, two passes, one lane.
    argon2_memory_kib: Annotated[int, Field(ge=8 * KIB)] = 19 * KIB
    argon2_time_cost: Annotated[int, Field(ge=1)] = 2
    argon2_parallelism: Annotated[int, Field(ge=1)] = 1
    max_concurrent_hashes: PositiveInt = 2
    password_min_length: Annotated[int, Field(ge=8)] = 8
    password_max_length: Annotated[int, Field(ge=64, le=1024)] = 128
    password_min_score: Annotated[int, Field(ge=0, le=4)] = 1
    # Login protection: failures per (account, ip), per ip, and per account from ips that
    # never signed in to it. A victim's own known ip is never locked out by the last one.
    login_failures_per_account_ip: str = "5/15minutes"
    login_failures_per_ip: str = "50/15minutes"
    login_failures_per_account: str = "30/hour"


class EventsSettings(BaseModel):
    """Durable events: relay, consumer retries and the NATS layout (`VECHE_EVENTS__*`)."""

    max_attempts: Annotated[int, Field(ge=1, le=100)] = 5
    retry_base_seconds: PositiveFloat = 0.5
    retry_max_seconds: PositiveFloat = 60.0
    poll_interval_seconds: PositiveFloat = 1.0
    batch_size: Annotated[int, Field(ge=1, le=1000)] = 100
    # Names the JetStream streams (`<PREFIX>_<APP>`), subjects and durable consumers.
    stream_prefix: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")] = "veche"
    ack_wait_seconds: PositiveFloat = 30.0
    # Retention (docs/events.md#retention): the kernel's prune job deletes, every
    # `prune_interval_seconds` and `prune_batch_size` rows per transaction, published
    # outbox rows and processed-event rows older than these. At least an hour, so a
    # processed row always outlives the redeliveries of its event.
    outbox_retention_hours: Annotated[float, Field(ge=1)] = 168.0
    processed_retention_hours: Annotated[float, Field(ge=1)] = 168.0
    prune_interval_seconds: Annotated[float, Field(ge=1)] = 3600.0
    prune_batch_size: Annotated[int, Field(ge=1, le=100_000)] = 5000


class RealtimeSettings(BaseModel):
    """The realtime hub: history, heartbeats, queues and limits (`VECHE_REALTIME__*`)."""

    history_size: Annotated[int, Field(ge=1, le=10_000)] = 100
    history_ttl_seconds: PositiveFloat = 300.0
    heartbeat_seconds: PositiveFloat = 15.0
    sse_retry_ms: PositiveInt = 2000
    # Messages waiting for one connection; a client that falls this far behind is closed
    # (it resumes from its offset) so it can never slow anyone else.
    queue_size: Annotated[int, Field(ge=1, le=100_000)] = 256
    max_channels: Annotated[int, Field(ge=1, le=1000)] = 32
    max_frame_bytes: Annotated[int, Field(ge=256)] = 64 * KIB
    presence_ttl_seconds: PositiveFloat = 45.0
    auth_timeout_seconds: PositiveFloat = 10.0
    shutdown_timeout_seconds: PositiveFloat = 5.0
    # Prefix of the shared keys and subjects in Redis, so deployments can share a server.
    namespace: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "veche"


LLMProviderName = Literal["local", "openai"]


class LLMProfile(BaseModel):
    """One purpose's model choice; every unset field falls back to the `VECHE_LLM_*` default."""

    provider: LLMProviderName | None = None
    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=200_000)] | None = None
    timeout_seconds: PositiveFloat | None = None


class ModelPrice(BaseModel):
    """What a model costs, in currency units per million tokens."""

    input_per_million: Annotated[float, Field(ge=0.0)] = 0.0
    output_per_million: Annotated[float, Field(ge=0.0)] = 0.0


class AgentsSettings(BaseModel):
    """The agents app (`VECHE_AGENTS__*`): approvals, chat runs, worker spaces, memory."""

    # Approvals: how long a request waits by risk, when the warning goes out, how many
    # times a rejected call may be revised.
    approval_timeout_medium_seconds: Annotated[int, Field(ge=10, le=86_400)] = 300
    approval_timeout_high_seconds: Annotated[int, Field(ge=10, le=86_400)] = 600
    approval_warning_seconds: Annotated[int, Field(ge=1, le=3600)] = 60
    max_rejected_retries: Annotated[int, Field(ge=0, le=10)] = 3
    # Client-side tools: how long the server waits for the user's machine.
    client_tool_timeout_seconds: Annotated[int, Field(ge=5, le=3600)] = 120
    # Direct chat: the history a run sees, memory hits it retrieves, tool rounds it may take.
    history_messages: Annotated[int, Field(ge=1, le=200)] = 10
    history_tokens: Annotated[int, Field(ge=100, le=100_000)] = 4000
    memory_results: Annotated[int, Field(ge=0, le=50)] = 5
    # The similarity a memory needs to be put in a run's prompt; None: the embedding
    # model's own floor (multilingual-e5-small 0.8, all-MiniLM-L6-v2 0.3; none known for
    # an OpenAI-compatible model), 0: every hit.
    memory_min_score: Annotated[float, Field(ge=-1.0, le=1.0)] | None = None
    max_tool_rounds: Annotated[int, Field(ge=1, le=50)] = 8
    # How often the runner looks for work other processes queued or resolved.
    runner_poll_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    # Worker spaces: released after this long unused; agent configs cached this long.
    space_idle_seconds: Annotated[int, Field(ge=1, le=86_400)] = 900
    config_cache_ttl_seconds: Annotated[int, Field(ge=0, le=3600)] = 60
    # Agent health: checked this often; an agent in error is retried after this long.
    health_interval_seconds: Annotated[int, Field(ge=1, le=3600)] = 30
    error_recovery_seconds: Annotated[int, Field(ge=1, le=86_400)] = 60
    # The agent bus: queued work per agent and per user before new work is refused (429),
    # claims per task before a transient failure becomes final, and the backoff between
    # them (exponential from `retry_base_seconds`, capped, with jitter).
    agent_queue_limit: Annotated[int, Field(ge=1, le=100_000)] = 100
    user_queue_limit: Annotated[int, Field(ge=1, le=1_000_000)] = 500
    task_max_attempts: Annotated[int, Field(ge=1, le=20)] = 3
    retry_base_seconds: Annotated[float, Field(gt=0, le=3600)] = 2.0
    retry_max_seconds: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    # Orchestrated plans: a plan made for the same request (normalized) and the same
    # agents is reused for this long instead of asking the model again.
    plan_cache_seconds: Annotated[int, Field(ge=0, le=7 * 86_400)] = 86_400


class StorageSettings(BaseModel):
    """Blob storage and the image pipeline (`VECHE_STORAGE__*`); `VECHE_BLOB_URL` picks
    the backend: unset for files under `<data_dir>/blobs`, `file:///path`, or
    `s3://bucket/prefix` with the `s3_*` values below."""

    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_timeout_seconds: PositiveFloat = 30.0
    # Where clients fetch blobs directly (a CDN or public bucket); unset: through the API.
    public_url: str | None = None
    # Uploads: the largest file accepted and the largest decoded image (decompression bombs).
    max_upload_bytes: Annotated[int, Field(ge=1 * KIB, le=200 * MIB)] = 10 * MIB
    max_image_pixels: Annotated[int, Field(ge=1, le=200_000_000)] = 40_000_000
    # Images decoded at once per process; each may hold hundreds of MB while it works.
    image_workers: Annotated[int, Field(ge=1, le=32)] = 2
    webp_quality: Annotated[int, Field(ge=1, le=100)] = 80


class BlogSettings(BaseModel):
    """The blog app (`VECHE_BLOG__*`): scheduled publishing, orphaned media, caching and
    AI suggestions."""

    # Scheduled posts are looked for this often (the job ticks every 5 seconds).
    publish_interval_seconds: Annotated[float, Field(ge=5, le=3600)] = 5.0
    # Uploads attached to nothing for this long are deleted by the cleanup job.
    orphan_media_hours: Annotated[float, Field(gt=0, le=24 * 365)] = 24.0
    orphan_sweep_interval_seconds: Annotated[float, Field(ge=1, le=86_400)] = 3600.0
    # The messenger: the longest message body (characters) and the most members of a group
    # conversation, its creator included.
    message_max_chars: Annotated[int, Field(ge=1, le=100_000)] = 4000
    group_max_members: Annotated[int, Field(ge=2, le=1000)] = 50
    # Cached first feed pages and `/me` (Redis with VECHE_REDIS_URL, else memory). Events
    # invalidate them; the time to live only bounds what an invalidation could miss (the
    # unread message count of `/me` has no event of its own, hence its shorter life).
    feed_cache_seconds: Annotated[float, Field(ge=0, le=3600)] = 60.0
    me_cache_seconds: Annotated[float, Field(ge=0, le=3600)] = 15.0
    # AI suggestions: computed by the `blog-recommender` consumer for each published post.
    suggestions_enabled: bool = True
    # At most this many readers get a suggestion for one post (bounds LLM calls too).
    suggestion_max_readers: Annotated[int, Field(ge=1, le=1000)] = 20
    # Similar published posts looked at to find readers, and how similar they must be
    # (cosine; multilingual-e5 rates unrelated short texts around 0.75).
    suggestion_similar_posts: Annotated[int, Field(ge=1, le=200)] = 20
    suggestion_min_score: Annotated[float, Field(ge=-1, le=1)] = 0.82
    # Suggestions mixed into the first feed page.
    feed_suggestions: Annotated[int, Field(ge=0, le=10)] = 3


class AISettings(BaseModel):
    """The AI gateway: purposes, prices, budgets and resilience (`VECHE_AI__*`).

    Profiles and prices are JSON in the environment, e.g.
    `VECHE_AI__PROFILES='{"planner": {"model": "gpt-4.1", "temperature": 0}}'`.
    """

    profiles: dict[str, LLMProfile] = Field(default_factory=dict)
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.3
    max_tokens: Annotated[int, Field(ge=1, le=200_000)] = 512
    timeout_seconds: PositiveFloat = 60.0
    # Tokens (prompt + completion) one user may spend per UTC day; 0 switches budgets off.
    daily_token_budget: NonNegativeInt = 200_000
    max_retries: Annotated[int, Field(ge=0, le=10)] = 3
    circuit_failure_threshold: Annotated[int, Field(ge=1, le=1000)] = 5
    circuit_reset_seconds: PositiveFloat = 30.0
    # The in-process model: llama.cpp on one thread (two threads on a busy 2-core machine
    # run several times slower), one call at a time.
    local_threads: Annotated[int, Field(ge=1, le=64)] = 1
    local_context_tokens: Annotated[int, Field(ge=256, le=32_768)] = 2048
    # Keep what the model read of the previous prompt when messages leave the middle of
    # the conversation (its cache's entries are moved, not read again; docs/ai.md).
    local_reuse_cache: bool = True
    embedding_batch_size: Annotated[int, Field(ge=1, le=2048)] = 32
    embedding_cache_size: NonNegativeInt = 10_000
    # Needed with an OpenAI-compatible embeddings provider: vector memory is created with a
    # fixed dimension (the local models are 384-d and say so themselves).
    embedding_dimensions: Annotated[int, Field(ge=1, le=8192)] | None = None


class Settings(BaseSettings):
    """The whole configuration of a Veche process."""

    model_config = SettingsConfigDict(
        env_prefix="VECHE_",
        env_file=".env",
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )

    env: Environment = "dev"
    role: Role = "all"
    data_dir: Path = Path("var")
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    public_url: str | None = None
    apps: Annotated[list[str] | None, NoDecode] = None
    # At shutdown, how long the background loops (event relay and consumers, scheduled
    # jobs) get to finish the unit of work in hand before they are cancelled.
    shutdown_grace_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0

    database_url: str | None = None
    database_pool_size: PositiveInt = 10
    database_max_overflow: NonNegativeInt = 10
    database_pool_timeout_seconds: PositiveFloat = 10.0
    database_pool_recycle_seconds: PositiveInt = 1800
    database_echo: bool = False
    # A ping before each checkout costs three round trips on asyncpg; stale connections
    # are otherwise dropped by `pool_recycle` and replaced after the first failed use.
    database_pre_ping: bool = False
    sqlite_busy_timeout_ms: PositiveInt = 5000
    # How often the scheduled job refreshes SQLite's planner statistics (ANALYZE); without
    # them SQLite picks a user's index over the primary key for `id IN (...)` look-ups.
    sqlite_analyze_interval_seconds: PositiveInt = 3600
    # Rows ANALYZE samples per index (SQLite's `analysis_limit`): bounded cost on any size.
    sqlite_analysis_limit: PositiveInt = 1000

    redis_url: str | None = None
    events_url: str | None = None
    realtime_url: str | None = None
    # Blobs (media): unset for `<data_dir>/blobs`, `file:///path`, or `s3://bucket/prefix`.
    blob_url: str | None = None

    # The LLM gateway's defaults; per-purpose overrides live in `ai.profiles`.
    llm_provider: LLMProviderName = "local"
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str | None = None
    embeddings_provider: LLMProviderName = "local"
    embeddings_base_url: str | None = None
    embeddings_api_key: SecretStr | None = None
    embeddings_model: str | None = None
    # Qdrant server for vector memory; without it vectors live under `data_dir`.
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None

    secret_key: SecretStr | None = None
    previous_secret_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    auth: AuthSettings = Field(default_factory=AuthSettings)
    realtime: RealtimeSettings = Field(default_factory=RealtimeSettings)
    events: EventsSettings = Field(default_factory=EventsSettings)
    ai: AISettings = Field(default_factory=AISettings)
    agents: AgentsSettings = Field(default_factory=AgentsSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    blog: BlogSettings = Field(default_factory=BlogSettings)

    max_body_bytes: PositiveInt = 1 * MIB
    # Named policies; given ones override these defaults, the rest stay.
    rate_limits: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_RATE_LIMITS))
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    access_log: bool = True
    metrics_enabled: bool = True
    otel_enabled: bool = False
    otel_service_name: str = "veche"
    # Garbage-collector tuning for a long-running server (`veche.kernel.collector`): once
    # started, everything alive moves to the permanent generation, and young collections
    # run every `gc_thresholds[0]` allocations instead of 700, so objects that live for
    # one delivery are freed by reference counting before a collection promotes them.
    # Undone at shutdown. Without it a full collection at 1,000 open streams paused the
    # process for 100-350 ms (docs/benchmarks.md).
    gc_tuning: bool = True
    gc_thresholds: tuple[PositiveInt, NonNegativeInt, NonNegativeInt] = (10_000, 20, 10)

    @field_validator("apps", "trusted_proxies", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("previous_secret_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an IP address or network") from exc
        return value

    @field_validator("rate_limits", mode="before")
    @classmethod
    def _merge_default_limits(cls, value: object) -> object:
        if isinstance(value, dict):
            return {**DEFAULT_RATE_LIMITS, **value}
        return value

    @field_validator("rate_limits")
    @classmethod
    def _valid_limits(cls, value: dict[str, str]) -> dict[str, str]:
        from limits import parse_many  # local: only for validation

        for name, spec in value.items():
            try:
                parse_many(spec)
            except ValueError as exc:
                raise ValueError(f"rate limit {name!r}: {spec!r} is not a limit") from exc
        return value

    @model_validator(mode="after")
    def _production_is_explicit(self) -> Settings:
        if self.env == "production":
            problems = self.production_problems()
            if problems:
                lines = "\n".join(f"  - {problem}" for problem in problems)
                raise ValueError(f"production settings are incomplete or unsafe:\n{lines}")
        return self

    def production_problems(self) -> list[str]:
        """Every reason these settings are not fit for production, one line each."""
        problems: list[str] = []
        key = self.secret_key.get_secret_value() if self.secret_key else ""
        if not key:
            problems.append("VECHE_SECRET_KEY is missing (a random string of 32+ characters)")
        elif len(key) < MIN_SECRET_KEY_LENGTH:
            problems.append(f"VECHE_SECRET_KEY is shorter than {MIN_SECRET_KEY_LENGTH} characters")
        for index, old in enumerate(self.previous_secret_keys):
            if len(old.get_secret_value()) < MIN_SECRET_KEY_LENGTH:
                problems.append(f"VECHE_PREVIOUS_SECRET_KEYS[{index}] is too short")
        if not self.database_url:
            problems.append("VECHE_DATABASE_URL is missing (postgresql+asyncpg://...)")
        elif self.database_url.startswith("sqlite"):
            problems.append("VECHE_DATABASE_URL points at SQLite; production needs PostgreSQL")
        if not self.redis_url:
            problems.append("VECHE_REDIS_URL is missing (rate limits and cache are shared)")
        if not self.public_url:
            problems.append("VECHE_PUBLIC_URL is missing (the URL clients reach the API at)")
        if self.database_echo:
            problems.append("VECHE_DATABASE_ECHO must be off (it logs query parameters)")
        return problems

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'veche.db').as_posix()}"

    @cached_property
    def signing_keys(self) -> list[str]:
        """The current signing key first, then the previous ones still accepted."""
        current = self.secret_key.get_secret_value() if self.secret_key else None
        if current is None:
            current = _dev_secret_key(self.data_dir)
        return [current, *(key.get_secret_value() for key in self.previous_secret_keys)]


def _dev_secret_key(data_dir: Path) -> str:
    """Read the development key from `var/`, making it once with owner-only permissions."""
    path = data_dir / "secret_key"
    try:
        return _read_dev_key(path)
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    # Written whole under a private name (mkstemp: mode 0600), then published with one
    # link, so a process starting at the same moment sees no key or the whole key, never
    # an empty file; if another process published first, its key wins.
    descriptor, draft = tempfile.mkstemp(dir=data_dir, prefix=".secret_key.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_urlsafe(48))
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
    finally:
        os.unlink(draft)
    return _read_dev_key(path)


def _read_dev_key(path: Path) -> str:
    key = path.read_text(encoding="utf-8").strip()
    if len(key) < MIN_SECRET_KEY_LENGTH:
        raise ValueError(f"{path} holds no usable key; delete it and a new one is made")
    return key


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the environment and `.env`, with explicit overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
