"""The one settings object. Environment variables use the SPEECH_ prefix.

Serve config `args` arrive here too (the application builder validates them into
`Settings`), so a value can come from serve_config.yaml or the environment, and explicit
args win.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SPEECH_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Field(
        Path("~/.cache/speech-cluster"),
        description="Root for models, uploads and the embedded Redis. Use a shared "
        "filesystem path on multi-node clusters.",
    )
    models_dir: Path | None = Field(None, description="Model weights; default data_dir/models.")
    whisper_model: str = Field(
        "base",
        description="The default speech-to-text model (what `whisper-1` and requests without "
        "a model get): 'base' (bundled multilingual, offline), 'tiny.en' (bundled, English "
        "only, faster), a CTranslate2 model directory, or a hub name such as 'large-v3' "
        "(needs allow_downloads).",
    )
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
    hf_token: SecretStr | None = Field(None, description="Hugging Face token for hub models.")
    allow_downloads: bool = Field(False, description="Allow fetching models from a hub.")
    device: str = Field("auto", description="'auto' (CUDA when visible), 'cuda' or 'cpu'.")
    transcriber_batch_size: int = Field(8, ge=1, le=64, description="30 s windows per batch.")
    cpu_threads: int = Field(0, ge=0, description="Threads per replica on CPU; 0 = Ray's num_cpus.")
    max_upload_mb: float = Field(200.0, gt=0, description="Largest accepted upload.")

    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("redis_url", "REDIS_URL", "SPEECH_REDIS_URL"),
        description="Job state server. Unset: an embedded Redis persisted under data_dir/redis "
        "(single node). Multi-node clusters need a shared Redis.",
    )
    redis_key_prefix: str = Field("sc:", description="Prefix of every Redis key.")
    storage_dir: Path | None = Field(
        None, description="Uploaded audio; default data_dir/uploads. Shared path on clusters."
    )
    app_name: str = Field("speech", description="Serve application name (handle lookups).")
    max_concurrent_jobs: int = Field(4, ge=1, description="Jobs the manager runs at once.")
    max_inflight_segments: int = Field(
        8, ge=1, description="Segments in flight across all jobs (backpressure)."
    )
    segment_timeout_s: float = Field(300.0, gt=0, description="One model call's time limit.")
    segment_max_attempts: int = Field(4, ge=1, description="Tries per segment and model.")
    retry_base_s: float = Field(1.0, ge=0, description="First retry delay; doubles each time.")
    job_timeout_s: float = Field(6 * 3600.0, gt=0, description="Wall-clock limit of a job.")
    result_ttl_s: float = Field(7 * 86400.0, gt=0, description="How long results are kept.")
    audio_ttl_s: float = Field(86400.0, ge=0, description="How long audio is kept after a job.")

    max_job_duration_s: float = Field(
        4 * 3600.0, gt=0, description="Longest recording accepted by /v1/jobs."
    )
    max_active_jobs: int = Field(
        200, ge=1, description="Queued + running jobs before submissions get 429."
    )
    sync_direct_max_s: float = Field(
        30.0, ge=0, description="OpenAI requests up to this long skip the job path."
    )
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="When set, every /v1 endpoint needs one (Authorization: Bearer <key> or "
        "X-API-Key); jobs are visible only to the key that made them. JSON list in env. "
        "Required when Serve's HTTP proxy binds a non-loopback address.",
    )
    allow_unauthenticated: bool = Field(
        False,
        description="Serve without API keys on a non-loopback address anyway (for a "
        "network you control). Without it such an app refuses to start.",
    )
    webhook_secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key for webhook signatures (X-Speech-Signature)."
    )
    webhook_max_attempts: int = Field(6, ge=1, description="Webhook deliveries before giving up.")
    webhook_allow: list[str] = Field(
        default_factory=list,
        description="Webhook hosts or networks (names or CIDRs such as 10.0.0.0/8) allowed "
        "although private; every other webhook must resolve to public addresses.",
    )
    max_job_interruptions: int = Field(
        3,
        ge=0,
        description="Times a job may be interrupted by a manager crash and resumed before "
        "it fails (a job that crashes the manager is not resumed forever).",
    )

    @property
    def whisper_models(self) -> list[str]:
        """Every model served, the default first."""
        extra = [m for m in self.extra_whisper_models if m != self.whisper_model]
        return [self.whisper_model, *dict.fromkeys(extra)]

    @property
    def resolved_storage_dir(self) -> Path:
        return (self.storage_dir or self.resolved_data_dir / "uploads").expanduser().resolve()

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def resolved_models_dir(self) -> Path:
        return (self.models_dir or self.resolved_data_dir / "models").expanduser().resolve()


@lru_cache
def get_settings() -> Settings:
    return Settings()
