"""One JSON error shape for every failure: {"error": {"code": ..., "message": ...}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5  # a Redis restart or a replica replacement takes seconds


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def retry_later(status: int, code: str, message: str, after_s: int = RETRY_AFTER_S) -> ApiError:
    """A refusal the caller should simply repeat (429/503), with when to do so."""
    return ApiError(status, code, message, headers={"Retry-After": str(after_s)})


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "form")]
        name = ".".join(loc) or "request"
        parts.append(f"{name}: {err.get('msg', 'invalid value')}")
    return "; ".join(parts) or "invalid request"


def classify(exc: BaseException) -> tuple[int, str, str] | None:
    """(status, code, one-line message) for failures that are not the server's bug."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from deployments.core.schemas import InputRejected

    cause = getattr(exc, "cause", None)
    if isinstance(cause, InputRejected) or isinstance(exc, InputRejected):
        text = str(cause if isinstance(cause, InputRejected) else exc).splitlines()
        return 422, "input_rejected", (text[0] if text else "the input was rejected")
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return 503, "unavailable", "The job store (Redis) is unavailable; retry shortly."
    if _ray_unavailable(exc):
        return 503, "unavailable", "A model or the job manager is unavailable; retry shortly."
    return None


def _ray_unavailable(exc: BaseException) -> bool:
    try:
        from ray import exceptions as rex
        from ray.serve import exceptions as sex
    except ImportError:
        return False
    kinds = tuple(
        k
        for k in (
            getattr(rex, "RayActorError", None),
            getattr(rex, "ActorUnavailableError", None),
            getattr(sex, "BackPressureError", None),
            getattr(sex, "DeploymentUnavailableError", None),
            getattr(sex, "ReplicaUnavailableError", None),
        )
        if k is not None
    )
    return isinstance(exc, kinds)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body("invalid_parameter", _validation_message(exc)), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        mapped = classify(exc)
        if mapped is not None:
            status, code, message = mapped
            log.warning("%s: %s", code, type(exc).__name__, exc_info=exc)
            headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
            return JSONResponse(error_body(code, message), status, headers=headers)
        log.exception("unhandled error")
        # Exception text can carry a remote traceback: it goes to the log, never to the user.
        message = f"internal error ({type(exc).__name__}); details are in the server log"
        return JSONResponse(error_body("internal_error", message), 500)
