"""What the HTTP routes use, wired once per ingress replica and reachable from any route.

Routes take `Services` through a FastAPI dependency, so in-process tests can install fakes
on `api.state.services` without Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from serve_app.errors import ApiError, retry_later
from serve_app.held import HeldRequests
from serve_app.settings import Settings


@dataclass
class Services:
    settings: Settings
    transcribers: dict[str, Any]  # model -> its Transcriber handle, the default included
    diarizer: Any  # DeploymentHandle
    store: Any = None  # jobs.state.job_store.JobStore
    storage: Any = None  # jobs.state.audio_files.AudioStorage
    manager: Any = None  # DeploymentHandle of jobs.pipeline.manager.JobManager
    speakers: Any = None  # jobs.state.speakers.SpeakerRegistry
    infos: dict[str, dict] = field(default_factory=dict)  # model -> its replicas' info, asked once
    held: HeldRequests | None = None  # made from the settings on first use

    def held_requests(self) -> HeldRequests:
        """This process's count of long-held requests (serve_app/held.py)."""
        if self.held is None:
            s = self.settings
            self.held = HeldRequests(s.max_held_requests, s.max_streams_per_key)
        return self.held

    @property
    def served_models(self) -> tuple[str, ...]:
        return ("whisper-1", *self.settings.whisper_models)

    def model_name(self, requested: str | None) -> str:
        """The served model a request names (`whisper-1` or none: the default)."""
        if requested in (None, "", "whisper-1"):
            return self.settings.whisper_model
        if requested not in self.settings.whisper_models:
            raise ApiError(
                422,  # the OpenAI routes answer 400, as OpenAI does
                "invalid_model",
                f"model: {requested!r} is not served; use one of {list(self.served_models)}",
            )
        return requested

    def transcriber_for(self, model: str):
        return self.transcribers[model]

    async def model_info(self, model: str) -> dict:
        if model not in self.infos:
            self.infos[model] = await self.transcriber_for(model).info.remote()
        return self.infos[model]


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


def get_services_for(app: object) -> Services | None:
    """The process's services, or None before the ingress has wired them."""
    return getattr(getattr(app, "state", None), "services", None) or _installed


def get_services(request: Request) -> Services:
    services = get_services_for(request.app)
    if services is None:
        raise retry_later(503, "not_ready", "the service is starting; retry shortly")
    return services
