"""The single place where failures become HTTP: one body shape {"error", "code", "status"}.

Every body comes from `AppError.body()`. An unexpected exception becomes a 500 in that shape,
logged with its traceback; it is answered inside the app (never re-raised to the server), so the
client's keep-alive connection survives it.
"""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import AppError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "invalid_input", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    413: "too_long", 429: "too_many_jobs",
}


class ErrorBody(BaseModel):
    """The one error shape of every failing response."""

    error: str
    code: str
    status: int


# Declared on every route so the OpenAPI document says what failures look like.
ERROR_RESPONSES = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Malformed request body",
        401: "An API token is required (LOUPE_API_TOKEN)",
        404: "Unknown model, analysis, route or stored slice",
        405: "Method not allowed (see the Allow header)",
        409: "The analysis is not done",
        413: "Text, body or sequence too long",
        422: "Invalid input",
        429: "Too many analyses queued by this client (see Retry-After)",
        500: "Internal error, or the analysis failed (the message names the cause)",
        503: "The model could not be loaded, or the computation was interrupted",
        504: "The analysis exceeded its time limit",
    }.items()
}


def respond(error: AppError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers={**error.headers(), **(headers or {})})


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
    return "Invalid request. " + "; ".join(parts)


INTERNAL = AppError("Internal error; it has been logged.", code="internal_error", status=500)


class CatchAll:
    """Answers an exception that escaped every handler with the 500 body, without re-raising it
    (Starlette's outermost handler re-raises, and the server then drops the connection)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if scope["type"] != "http" or started:
                raise
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            await respond(INTERNAL)(scope, receive, send)


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette's own Allow names only the first
    route that matches the path: GET /api/analyses/{id} but not its DELETE); GET and HEAD where
    no route does (the static frontend)."""
    methods = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            methods.append(method)
    return ", ".join(methods or ["GET", "HEAD"])


def install(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return respond(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return respond(AppError(_describe(exc), code="invalid_input", status=422))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "Request failed."
        if exc.status_code == 404 and message == "Not Found":  # no route: say what was asked for
            message = f"Nothing at {request.url.path}; /docs lists the API."
        if exc.status_code == 413:
            message = f"The request body is larger than the server's limit ({request.app.state.settings.max_body_bytes} bytes)."
        error = AppError(message, code=_HTTP_CODES.get(exc.status_code, "http_error"), status=exc.status_code)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        return respond(error, headers=headers)  # e.g. Allow on a 405

    app.add_middleware(CatchAll)
