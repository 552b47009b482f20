"""FastAPI ingress deployment and the typed application builder.

The HTTP layer validates input and calls model deployments and the job manager (a Serve
deployment of the same application) through DeploymentHandles. It holds no model code.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import Depends, FastAPI
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from deployments.replicas.diarizer import Diarizer
from deployments.replicas.transcriber import DEFAULT_DEPLOYMENT, Transcriber, deployment_name
from serve_app.deployment_defaults import config_deployments, options_for
from serve_app.errors import install_error_handlers, retry_later
from serve_app.exposure import check_exposure, serve_http_host
from serve_app.limits import BodySizeLimit
from serve_app.routers.jobs import router as jobs_router
from serve_app.routers.openai import router as openai_router
from serve_app.routers.realtime import router as realtime_router
from serve_app.routers.speakers import router as speakers_router
from serve_app.services.context import Services, get_services, install
from serve_app.settings import Settings

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 10.0

api = FastAPI(
    title="speech-cluster",
    version="0.1.0",
    description="Transcription and speaker diarization of long recordings on Ray Serve.",
)
install_error_handlers(api)
api.add_middleware(BodySizeLimit)
api.include_router(openai_router)
api.include_router(jobs_router)
api.include_router(speakers_router)
api.include_router(realtime_router)


@api.get("/healthz", summary="Readiness: 200 once models, Redis and the job manager answer")
async def healthz(services: Annotated[Services, Depends(get_services)]) -> dict:
    models = services.settings.whisper_models
    try:
        t_info, d_info, _, _, *_ = await asyncio.wait_for(
            asyncio.gather(
                services.transcriber_for(services.settings.whisper_model).info.remote(),
                services.diarizer.info.remote(),
                services.store.ping(),
                services.manager.ping.remote(),
                # Every served model answers, not only the default.
                *(services.transcriber_for(m).info.remote() for m in models[1:]),
            ),
            HEALTH_TIMEOUT_S,
        )
    except Exception as exc:
        log.warning("health check failed", exc_info=exc)
        raise retry_later(503, "not_ready", f"not ready ({type(exc).__name__})") from exc
    return {
        "status": "ok",
        "transcriber": t_info["model"],
        "models": models,
        "device": t_info["device"],
        "diarizer": d_info["model"],
    }


@serve.deployment  # sized by serve_config.yaml (serve_app/deployment_defaults.py)
@serve.ingress(api)
class Ingress:
    def __init__(
        self,
        transcribers: dict[str, DeploymentHandle],
        diarizer: DeploymentHandle,
        manager: DeploymentHandle,
        settings: Settings,
    ) -> None:
        from jobs.state.audio_files import AudioStorage
        from jobs.state.job_store import JobStore
        from jobs.state.redis_server import resolve_redis_url
        from jobs.state.speakers import SpeakerRegistry

        check_exposure(settings, serve_http_host())
        redis_url = resolve_redis_url(settings.redis_url, settings.resolved_data_dir)
        # Few retries: a request answers 503 soon rather than hang while Redis is down.
        store = JobStore(redis_url, settings.redis_key_prefix, settings.result_ttl_s, retries=3)
        install(
            Services(
                settings=settings,
                transcribers=transcribers,
                diarizer=diarizer,
                store=store,
                storage=AudioStorage(settings.resolved_storage_dir),
                manager=manager,
                speakers=SpeakerRegistry(store.redis, settings.redis_key_prefix),
            )
        )


def build_app(
    settings: Settings,
    transcriber: dict | None = None,
    diarizer: dict | None = None,
    models: dict[str, dict] | None = None,
    defaults: dict[str, dict] | None = None,
) -> Application:
    """Compose the app; `transcriber`/`diarizer` override deployment options (tests, tools).

    Each served Whisper model gets a deployment of its own (`Transcriber` for the default,
    `Transcriber-<model>` for the others), so serve_config.yaml sizes each one apart;
    `transcriber` applies to the default model's, `models` to others' by deployment name.
    `defaults` are the deployment options beneath those overrides: by default
    serve_config.yaml's, so an app built from Python is sized as `serve run` sizes it.
    """
    if defaults is None:
        defaults = config_deployments()
    overrides = {**(models or {}), DEFAULT_DEPLOYMENT: transcriber or {}}
    from jobs.pipeline.manager import JobManager

    check_exposure(settings, serve_http_host())
    models_dir = str(settings.resolved_models_dir)
    names = {
        model: deployment_name(model, settings.whisper_model) for model in settings.whisper_models
    }
    transcriber_apps = {
        model: Transcriber.options(
            name=names[model], **options_for(names[model], defaults, overrides.get(names[model]))
        ).bind(
            model=model,
            models_dir=models_dir,
            allow_downloads=settings.allow_downloads,
            device=settings.device,
            cpu_threads=settings.cpu_threads,
            batch_size=settings.transcriber_batch_size,
        )
        for model in settings.whisper_models
    }
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    diarizer_app = Diarizer.options(**options_for("Diarizer", defaults, diarizer)).bind(
        model=settings.diarization_model,
        models_dir=models_dir,
        allow_downloads=settings.allow_downloads,
        hf_token=token,
        device=settings.device,
        cpu_threads=settings.cpu_threads,
        segmentation_step=settings.diarization_step,
        half=settings.diarization_half,
    )
    manager_app = JobManager.options(**options_for("JobManager", defaults, None)).bind(
        settings.jobs_config(), transcriber_apps, diarizer_app
    )
    ingress = Ingress.options(**options_for("Ingress", defaults, None))
    return ingress.bind(transcriber_apps, diarizer_app, manager_app, settings)


def app_builder(args: Settings) -> Application:
    """Entry point of serve_config.yaml: `args` are validated into Settings."""
    settings = args if isinstance(args, Settings) else Settings.model_validate(args or {})
    # Serve applies the config file's own deployment options; nothing to add beneath them.
    return build_app(settings, defaults={})
