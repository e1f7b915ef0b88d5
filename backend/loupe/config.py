"""Settings(BaseSettings) with prefix LOUPE_: the only reader of the environment."""

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

REPO_ROOT = Path(__file__).resolve().parents[2]


def _split_list(value: object) -> object:
    """Accept a comma- or os.pathsep-separated string for a list setting."""
    if isinstance(value, str):
        parts = value.replace(os.pathsep, ",").split(",")
        return [p.strip() for p in parts if p.strip()]
    return value


class Settings(BaseSettings):
    """Every knob Loupe has. Set any of them as LOUPE_<NAME> in the environment."""

    model_config = SettingsConfigDict(env_prefix="LOUPE_", extra="ignore")

    data_dir: Path = Field(Path("./data"), description="Where the SQLite file and job state live.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<data_dir>/loupe.db.")
    zoo_dir: Path = Field(REPO_ROOT / "models", description="The embedded model zoo.")
    frontend_dir: Path = Field(REPO_ROOT / "frontend", description="The static frontend served at /.")
    model_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders whose subfolders holding a config.json become models `local/<folder>`.",
    )
    hub_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Hugging Face hub names that may be loaded (allow-list)."
    )
    default_model: str = Field("induction-2l", description="Model preselected in the page.")
    trust_remote_code: bool = Field(False, description="Allow hub models that ship their own code.")
    device: str = Field("cpu", description="torch device for models.")
    torch_threads: int | None = Field(
        None, ge=1, description="torch's CPU threads in this process (default: torch's choice, one per core). Set it to "
        "cores / workers when several `loupe worker`s share a host's CPUs: oversubscribed threads spin and slow every worker.",
    )
    device_map: str | None = Field(
        None,
        description="Spread each model TransformerBridge loads over several devices: `auto`, `balanced`, "
        "`balanced_low_0`, `sequential`, or a JSON object of module -> device (`\"cuda:1\"`, an index, `\"cpu\"`, "
        "`\"disk\"`). Replaces LOUPE_DEVICE for those models; Loupe's own classes still load on LOUPE_DEVICE.",
    )
    max_loaded_models: int = Field(2, ge=1, description="Models kept in memory (LRU).")
    max_tokens: int = Field(
        1024, ge=8, description="Longest accepted text, in tokens (each model accepts at most its own context, n_ctx). "
        "Raise it to the context of the models served: long prompts keep queries and keys, not T x T patterns.",
    )
    max_stored_tokens: int = Field(
        2048, ge=8, description="Longest prompt whose every attention pattern is stored whole, for models whose attention "
        "Loupe does not recompute from queries and keys (`pattern_source`); longer ones are refused on those models.",
    )
    max_iterations: int = Field(
        64, ge=1, le=256, description="Most loop iterations a request may ask for (`loop.times`); Huginn defaults to 32."
    )
    max_jobs: int = Field(2, ge=1, description="Analyses computed at once; the rest wait in a queue.")
    queue_url: str | None = Field(
        None,
        description="redis://… : analyses go to a Redis queue (RQ) that `loupe worker` processes take; the web "
        "process then loads no model. Unset: they run in this process (max_jobs threads).",
    )
    max_jobs_per_client: int = Field(
        8, ge=1, description="Analyses one client may have queued or running; more are refused with 429 and Retry-After."
    )
    client_header: str | None = Field(
        None,
        description="Header naming the client behind a trusted reverse proxy (e.g. X-Forwarded-For, X-Real-IP); "
        "by default the peer address identifies a client for LOUPE_MAX_JOBS_PER_CLIENT and fair queueing.",
    )
    max_db_bytes: int | None = Field(
        None, ge=1, description="Keep stored results under this many bytes: the least recently read are evicted past it."
    )
    failed_ttl_s: float = Field(86400.0, ge=0, description="Failed analyses are dropped after this many seconds.")
    frame_ancestors: str = Field(
        "'self'", description="CSP frame-ancestors: who may embed Loupe in a frame (e.g. `'self' https://wiki.example.org`)."
    )
    job_timeout_s: float = Field(1800.0, gt=0, description="A running analysis is stopped after this many seconds.")
    max_body_bytes: int = Field(2_000_000, ge=1024, description="Largest accepted request body, in bytes.")
    api_token: str | None = Field(
        None, description="If set, computing endpoints need `Authorization: Bearer <token>`; reading stays open."
    )
    sync_wait_s: float = Field(20.0, ge=0, description="How long POST /api/analyses waits for a result before answering `running`.")
    host: str = "127.0.0.1"
    port: int = 8000

    @field_validator("model_dirs", "hub_models", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        return _split_list(value)

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'loupe.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
