"""The job side of the one settings object: every field the job manager reads, declared once.

`serve_app.settings.Settings` inherits these fields (with the HTTP and replica ones), so a
value has one name, one default and one description whether it comes from
serve_config.yaml, a SPEECH_* environment variable or a test. The manager receives
`Settings.jobs_config()`: this class, filled from the settings (jobs/ never imports the
HTTP layer).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr


class JobsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Field(
        Path("~/.cache/speech-cluster"),
        description="Root for models, uploads and the embedded Redis. Use a shared "
        "filesystem path on multi-node clusters.",
    )
    whisper_model: str = Field(
        "base",
        description="The default speech-to-text model (what `whisper-1` and requests without "
        "a model get): 'base' (bundled multilingual, offline), 'tiny.en' (bundled, English "
        "only, faster), a CTranslate2 model directory, or a hub name such as 'large-v3' "
        "(needs allow_downloads).",
    )
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
    retry_base_s: float = Field(
        1.0, ge=0, description="First retry delay of a model call; doubles each time."
    )
    job_timeout_s: float = Field(6 * 3600.0, gt=0, description="Wall-clock limit of a job.")
    result_ttl_s: float = Field(7 * 86400.0, gt=0, description="How long results are kept.")
    audio_ttl_s: float = Field(86400.0, ge=0, description="How long audio is kept after a job.")
    max_job_duration_s: float = Field(
        4 * 3600.0, gt=0, description="Longest recording accepted by /v1/jobs."
    )
    max_job_interruptions: int = Field(
        3,
        ge=0,
        description="Times a job may be interrupted by a manager crash and resumed before "
        "it fails (a job that crashes the manager is not resumed forever).",
    )
    lease_s: float = Field(
        15.0,
        gt=0,
        description="A running job's lease in Redis; another manager replica takes the job "
        "over when it lapses (renewed every lease_s / 3).",
    )
    watchdog_s: float = Field(
        5.0, gt=0, description="How often the manager looks for orphaned or expired jobs."
    )
    split_min_s: float = Field(
        10.0, gt=0, description="Shortest segment the splitter cuts (at a silence)."
    )
    split_max_s: float = Field(
        60.0, gt=0, description="Longest segment the splitter cuts when no silence is found."
    )
    openai_abandon_grace_s: float = Field(
        30.0,
        ge=0,
        description="An OpenAI call's job is cancelled when no caller has waited on it for "
        "this long (a client's retry after its timeout comes back within it and reuses it; "
        "the job manager looks every watchdog_s).",
    )
    webhook_secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key for webhook signatures (X-Speech-Signature)."
    )
    webhook_max_attempts: int = Field(6, ge=1, description="Webhook deliveries before giving up.")
    webhook_base_delay_s: float = Field(
        1.0, ge=0, description="First webhook retry delay; doubles each time (to 10 min)."
    )
    webhook_timeout_s: float = Field(
        10.0, gt=0, description="Whole time one webhook delivery may take, answer included."
    )
    webhook_allow: list[str] = Field(
        default_factory=list,
        description="Webhook hosts or networks (names or CIDRs such as 10.0.0.0/8) allowed "
        "although private; every other webhook must resolve to public addresses.",
    )

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def resolved_storage_dir(self) -> Path:
        return (self.storage_dir or self.resolved_data_dir / "uploads").expanduser().resolve()

    @property
    def webhook_secret_value(self) -> str | None:
        return self.webhook_secret.get_secret_value() if self.webhook_secret else None

    def fingerprint(self) -> str:
        """Identifies the settings a replica runs with (tests check a redeploy applies)."""
        values = self.model_dump(mode="json")
        values["webhook_secret"] = self.webhook_secret_value
        return hashlib.sha256(repr(sorted(values.items())).encode()).hexdigest()[:16]
