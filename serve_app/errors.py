"""One JSON error shape for every failure: {"error": {"code": ..., "message": ...}}.

The OpenAI-compatible routes (/v1/audio/...) answer as OpenAI does instead, so its clients
parse and act on them: {"error": {"message", "type", "param", "code"}}, and 400 for a
request that fails validation (never 422).
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5  # a Redis restart or a replica replacement takes seconds


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers
        self.param = param or _param_of(message)


def retry_later(status: int, code: str, message: str, after_s: int = RETRY_AFTER_S) -> ApiError:
    """A refusal the caller should simply repeat (429/503), with when to do so."""
    return ApiError(status, code, message, headers={"Retry-After": str(after_s)})


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


_PARAM = re.compile(r"^([A-Za-z_][\w.\[\]]*): ")  # "language: ..." names its field


def _param_of(message: str) -> str | None:
    found = _PARAM.match(message)
    return found.group(1) if found else None


def _openai_type(status: int) -> str:
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def shaped(
    path: str, status: int, code: str, message: str, param: str | None = None
) -> tuple[int, dict]:
    """(status, body) in the shape the route's callers expect."""
    if "/v1/audio/" not in path:
        return status, error_body(code, message)
    status = 400 if status == 422 else status
    body = {"message": message, "type": _openai_type(status), "param": param, "code": code}
    return status, {"error": body}


def respond(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> JSONResponse:
    status, body = shaped(request.url.path, status, code, message, param)
    return JSONResponse(body, status, headers=headers)


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
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return respond(request, exc.status, exc.code, exc.message, exc.headers, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message = _validation_message(exc)
        return respond(request, 422, "invalid_parameter", message, param=_param_of(message))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return respond(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        mapped = classify(exc)
        if mapped is not None:
            status, code, message = mapped
            log.warning("%s: %s", code, type(exc).__name__, exc_info=exc)
            headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
            return respond(request, status, code, message, headers)
        log.exception("unhandled error")
        # Exception text can carry a remote traceback: it goes to the log, never to the user.
        message = f"internal error ({type(exc).__name__}); details are in the server log"
        return respond(request, 500, "internal_error", message)
