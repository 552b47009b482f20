"""What a realtime session (jobs/live/realtime_session.py) asks of the service: checked
settings, known speakers, and the shared Transcriber and Diarizer replicas."""

from __future__ import annotations

import dataclasses

import numpy as np
from pydantic import BaseModel

from deployments.core.schemas import TranscribeOptions, Transcription, VoiceSample
from jobs.live.session_config import SessionConfig, SessionRejected
from serve_app.errors import ApiError
from serve_app.services.context import Services
from serve_app.services.jobs import check_language
from serve_app.services.speakers import enrolled_speakers, reference_speakers


def _validated(model: type[BaseModel], value):
    # Validated against this version's schema, as the job manager does for segments.
    return model.model_validate(value.model_dump() if isinstance(value, BaseModel) else value)


class ServiceBackend:
    def __init__(self, services: Services, owner: str | None) -> None:
        self.services, self.owner = services, owner

    async def configure(self, config: SessionConfig, previous: SessionConfig) -> SessionConfig:
        services = self.services
        try:
            model = services.model_name(config.model)
            await check_language(services, config.language, model, "transcribe")
            known = config.known
            if config.known_spec != previous.known_spec:
                spec = config.known_spec
                known = tuple(await enrolled_speakers(services, self.owner, list(spec.ids)))
                if spec.names:
                    references = await reference_speakers(
                        services, list(spec.names), list(spec.references)
                    )
                    known += tuple(references or [])
        except ApiError as exc:
            raise SessionRejected(exc.code, exc.message, exc.param) from None
        return dataclasses.replace(config, served_model=model, known=known)

    async def transcribe(
        self, audio: np.ndarray, config: SessionConfig, languages: tuple[str, ...] = ()
    ) -> Transcription:
        options = TranscribeOptions(
            language=config.language,
            languages=() if config.language else languages,
            initial_prompt=config.prompt or None,
            word_timestamps=False,
        )
        handle = self.services.transcriber_for(config.served_model)
        return _validated(Transcription, await handle.transcribe_live.remote(audio, options))

    async def voice(self, audio: np.ndarray) -> VoiceSample:
        return _validated(VoiceSample, await self.services.diarizer.voiceprint_live.remote(audio))
