"""The one settings object. Environment variables use the SPEECH_ prefix.

Fields the job manager reads are declared in jobs/config.py (JobsConfig, inherited here);
the HTTP and replica ones here. tests/test_limits.py fails if a field is declared twice.

Serve config `args` arrive here too (the application builder validates them into
`Settings`), so a value can come from serve_config.yaml or the environment, and explicit
args win.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobs.config import JobsConfig

TENANT_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class Settings(BaseSettings, JobsConfig):
    model_config = SettingsConfigDict(
        env_prefix="SPEECH_", env_nested_delimiter="__", extra="forbid"
    )

    models_dir: Path | None = Field(None, description="Model weights; default data_dir/models.")
    extra_whisper_models: list[str] = Field(
        default_factory=lambda: ["tiny.en"],
        description="More models served beside the default, each by its own deployment "
        "(Transcriber-<name>, e.g. Transcriber-tiny-en); requests pick one with `model`.",
    )
    diarization_model: str = Field(
        "bundled",
        description="'bundled' (pyannote segmentation-3.0 + CAM++, offline) or a pyannote hub "
        "pipeline such as 'pyannote/speaker-diarization-community-1' (needs allow_downloads "
        "and hf_token).",
    )
    diarization_step: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Bundled diarizer: segmentation window hop as a fraction of its 10 s "
        "window. Unset: 0.2 (twice as fast as pyannote 3.1's 0.1, which gives up to 0.017 "
        "lower DER on real speech; docs/BENCHMARKS.md).",
    )
    diarization_half: bool = Field(
        False,
        description="Bundled diarizer on CUDA: CAM++ embeddings in float16 (within cosine "
        "0.999 of float32 on real voices; segmentation stays float32). Ignored on CPU.",
    )
    hf_token: SecretStr | None = Field(None, description="Hugging Face token for hub models.")
    allow_downloads: bool = Field(False, description="Allow fetching models from a hub.")
    device: str = Field("auto", description="'auto' (CUDA when visible), 'cuda' or 'cpu'.")
    transcriber_batch_size: int = Field(8, ge=1, le=64, description="30 s windows per batch.")
    cpu_threads: int = Field(0, ge=0, description="Threads per replica on CPU; 0 = Ray's num_cpus.")
    max_upload_mb: float = Field(200.0, gt=0, description="Largest accepted upload.")

    max_active_jobs: int = Field(
        200, ge=1, description="Queued + running jobs before submissions get 429."
    )
    max_active_jobs_per_key: int = Field(
        20, ge=0, description="Queued + running jobs of one API key before it gets 429 (0: none)."
    )
    max_stored_mb_per_key: float = Field(
        2000.0,
        ge=0,
        description="Uploaded audio one API key may have stored (kept audio_ttl_s after its "
        "jobs; a cancelled job's is deleted at once) before it gets 429 (0: no limit).",
    )
    sync_direct_max_s: float = Field(
        30.0, ge=0, description="OpenAI requests up to this long skip the job path."
    )
    speaker_sample_max_s: float = Field(
        60.0, gt=0, description="Longest enrollment sample; 2-10 s of one person works well."
    )
    speaker_max_samples: int = Field(10, ge=1, description="Samples per enrollment.")
    sse_keepalive_s: float = Field(
        15.0, gt=0, description="Event streams send a comment this often while a job is quiet."
    )
    direct_decode_max_mb: float = Field(
        5.0,
        ge=0,
        description="OpenAI requests without diarization and up to this size are decoded "
        "in the ingress to try the direct path (sync_direct_max_s) before a job.",
    )
    max_held_requests: int = Field(
        48,
        ge=1,
        description="Requests that hold the ingress for minutes (event streams, OpenAI calls "
        "waiting on a job) at once. Keep it below the Ingress's max_ongoing_requests, so "
        "short requests and /healthz always find a slot; past it callers get 503.",
    )
    max_streams_per_key: int = Field(
        8, ge=1, description="Such held requests per API key; past it callers get 429."
    )
    realtime_sessions_per_key: int = Field(
        4,
        ge=1,
        description="Open /v1/realtime sessions per API key; past it a session is "
        "refused (WebSocket close 1013) with an error event.",
    )
    realtime_idle_s: float = Field(
        60.0, gt=0, description="A realtime session with no client event this long is closed."
    )
    realtime_max_session_s: float = Field(
        3600.0, gt=0, description="Longest realtime session; start a new one after it."
    )
    realtime_max_buffer_s: float = Field(
        120.0,
        gt=0,
        description="Uncommitted audio a realtime session without server VAD "
        "holds; appends past it get an error event until the client commits or clears.",
    )
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="When set, every /v1 endpoint needs one (Authorization: Bearer <key> or "
        "X-API-Key); jobs are visible only to the key that made them. JSON list in env. "
        "Required when Serve's HTTP proxy binds a non-loopback address.",
    )
    api_key_tenants: dict[str, list[SecretStr]] = Field(
        default_factory=dict,
        description="Tenant id -> its API keys (JSON object in env). A tenant's jobs and "
        "speakers belong to the tenant, not the key: add a new key, move clients to it, "
        "remove the old one, and nothing is lost. A key listed only in api_keys is its own "
        "tenant, with the id `python -m serve_app.auth KEY` prints; use that id here to keep "
        "its data when it gets company.",
    )
    allow_unauthenticated: bool = Field(
        False,
        description="Serve without API keys on a non-loopback address anyway (for a "
        "network you control). Without it such an app refuses to start.",
    )

    @field_validator("api_key_tenants")
    @classmethod
    def _tenant_ids(cls, tenants: dict[str, list[SecretStr]]) -> dict[str, list[SecretStr]]:
        for tenant in tenants:
            if not TENANT_ID.fullmatch(tenant):
                raise ValueError(f"tenant id {tenant!r}: use 1-64 of A-Z a-z 0-9 _ . -")
        return tenants

    @property
    def keys_required(self) -> bool:
        return bool(self.api_keys or any(self.api_key_tenants.values()))

    def jobs_config(self) -> JobsConfig:
        """The manager's part of these settings."""
        return JobsConfig.model_validate(self.model_dump(include=set(JobsConfig.model_fields)))

    @property
    def whisper_models(self) -> list[str]:
        """Every model served, the default first."""
        extra = [m for m in self.extra_whisper_models if m != self.whisper_model]
        return [self.whisper_model, *dict.fromkeys(extra)]

    @property
    def resolved_models_dir(self) -> Path:
        return (self.models_dir or self.resolved_data_dir / "models").expanduser().resolve()


@lru_cache
def get_settings() -> Settings:
    return Settings()
