"""What the HTTP routes use, wired once per ingress replica and reachable from any route.

Routes take `Services` through a FastAPI dependency, so in-process tests can install fakes
on `api.state.services` without Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from serve_app.errors import retry_later
from serve_app.settings import Settings


@dataclass
class Services:
    settings: Settings
    transcriber: Any  # DeploymentHandle
    diarizer: Any  # DeploymentHandle
    store: Any = None  # jobs.store.JobStore
    storage: Any = None  # jobs.storage.AudioStorage
    manager: Any = None  # DeploymentHandle of jobs.manager.JobManager
    speakers: Any = None  # jobs.voiceprints.SpeakerRegistry
    languages: list[str] | None = None  # the served model's, asked once

    async def model_languages(self) -> list[str]:
        """Language codes the transcription model accepts ([] if it does not say)."""
        if self.languages is None:
            info = await self.transcriber.info.remote()
            self.languages = list(info.get("languages") or [])
        return self.languages

    @property
    def served_models(self) -> tuple[str, ...]:
        return ("whisper-1", self.settings.whisper_model)


_installed: Services | None = None


def install(services: Services) -> None:
    """Make `services` current for this process.

    A module global rather than `app.state`: Serve runs a pickled copy of the FastAPI app,
    so the replica's constructor cannot reach the app object requests go through.
    """
    global _installed
    _installed = services


def upload_limit_bytes(app: object) -> int | None:
    services = getattr(getattr(app, "state", None), "services", None) or _installed
    return int(services.settings.max_upload_mb * 1e6) if services else None


def get_services(request: Request) -> Services:
    services = getattr(request.app.state, "services", None) or _installed
    if services is None:
        raise retry_later(503, "not_ready", "the service is starting; retry shortly")
    return services
