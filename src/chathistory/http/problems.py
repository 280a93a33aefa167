"""RFC 9457 problem details: every error response of the HTTP face, built in one place.

Domain exceptions (:mod:`chathistory.errors`) know nothing of HTTP; :data:`DOMAIN_STATUS` maps
each class to its status here and nowhere else. Problems raised by the HTTP layer itself (401,
403, 413, 415) are :class:`HTTPProblem`. Bodies are ``application/problem+json`` with ``type``
(``about:blank``: the status says what happened), ``title`` (the status phrase), ``status``,
``detail``, a machine-readable ``code``, and for field errors an ``errors`` list of
``{"loc", "msg", "type"}``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

from chathistory.errors import (
    ChatHistoryError,
    ConflictError,
    InvalidCursorError,
    NotFoundError,
    SearchDisabledError,
    UnavailableError,
    ValidationError,
)

log = logging.getLogger("chathistory.http")

PROBLEM_JSON: Final = "application/problem+json"
REQUEST_ID_SCOPE_KEY: Final = "chathistory.request_id"
DEFAULT_RETRY_AFTER_SECONDS: Final = 5

#: Domain error class -> (status, code). First match wins, so subclasses come first.
DOMAIN_STATUS: Final[tuple[tuple[type[ChatHistoryError], int, str], ...]] = (
    (InvalidCursorError, 400, "invalid_cursor"),
    (ValidationError, 422, "validation_error"),
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (SearchDisabledError, 409, "search_disabled"),
    (UnavailableError, 503, "unavailable"),
)

# Query parameters whose bad values are a bad position in a list (400), not a bad field (422).
_CURSOR_PARAMETERS: Final = frozenset({"cursor", "after", "before"})

_HTTP_CODES: Final[Mapping[int, str]] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    503: "unavailable",
}


class FieldProblem(BaseModel):
    """One bad field: where (``loc``, as pydantic spells it), what is wrong, an error type."""

    loc: list[str | int] = Field(examples=[["content"]])
    msg: str = Field(examples=["may be null only on an assistant message that has tool_calls"])
    type: str = Field(examples=["value_error"])


class Problem(BaseModel):
    """An RFC 9457 problem details object (``application/problem+json``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "about:blank",
                    "title": "Not Found",
                    "status": 404,
                    "detail": "conversation 0196a0f4-8a6f-7c2e-9d0b-3f1e2a4b5c6d not found",
                    "code": "not_found",
                }
            ]
        }
    )

    type: str = Field(default="about:blank", description="a URI naming the problem type")
    title: str = Field(description="the HTTP status phrase")
    status: int = Field(description="the HTTP status code")
    detail: str = Field(description="what went wrong with this request")
    code: str = Field(description="a stable machine-readable error code")
    errors: list[FieldProblem] | None = Field(
        default=None, description="each bad field (validation problems only)"
    )


class HTTPProblem(Exception):
    """A problem the HTTP layer itself raises (authentication, media type, body size...)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        errors: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code or _HTTP_CODES.get(status, "http_error")
        self.headers: dict[str, str] = dict(headers or {})
        self.errors = [dict(e) for e in errors] if errors is not None else None


def problem_from_exception(exc: BaseException) -> HTTPProblem | None:
    """The problem an exception stands for, or ``None`` when it is a bug (a 500)."""
    if isinstance(exc, HTTPProblem):
        return exc
    if isinstance(exc, ChatHistoryError):
        for cls, status, code in DOMAIN_STATUS:
            if isinstance(exc, cls):
                errors = None
                if isinstance(exc, ValidationError):
                    errors = [e.as_dict() for e in exc.errors]
                return HTTPProblem(status, str(exc), code=code, errors=errors)
        return None
    if isinstance(exc, RequestValidationError):
        return _request_validation_problem(exc)
    if isinstance(exc, StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else status_phrase(exc.status_code)
        return HTTPProblem(exc.status_code, detail, headers=exc.headers)
    return None


def _request_validation_problem(exc: RequestValidationError) -> HTTPProblem:
    """FastAPI's own validation of path, query and body: 400 for bad JSON or cursor, else 422."""
    raw = list(exc.errors())
    malformed = [e for e in raw if e.get("type") == "json_invalid"]
    if malformed:
        reason = (malformed[0].get("ctx") or {}).get("error") or "invalid JSON"
        return HTTPProblem(400, f"the body is not valid JSON: {reason}", code="malformed_json")
    errors = [
        {
            "loc": list(e.get("loc", ())),
            "msg": str(e.get("msg", "is invalid")),
            "type": str(e.get("type", "value_error")),
        }
        for e in raw
    ]
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
    if errors and all(
        len(e["loc"]) == 2 and e["loc"][0] == "query" and e["loc"][1] in _CURSOR_PARAMETERS
        for e in errors
    ):
        return HTTPProblem(400, detail, code="invalid_cursor", errors=errors)
    return HTTPProblem(422, detail or "invalid request", code="validation_error", errors=errors)


def loggable_path(scope: Mapping[str, Any]) -> str:
    """The request path as sent (still percent-encoded), safe to put in a log line: a path
    never smuggles a newline or a control character into the log."""
    raw = scope.get("raw_path")
    if isinstance(raw, bytes):
        return raw.decode("ascii", "backslashreplace")
    path = str(scope.get("path", ""))
    return path.encode("ascii", "backslashreplace").decode("ascii")


def allowed_methods(request: Request) -> str:
    """Every method some route of the app serves at this path (Starlette names only those of
    the first route whose path matches, and a path often has one route per method)."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]
    return ", ".join(allowed)


_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class ProblemResponse(JSONResponse):
    """``application/problem+json``, ASCII-escaped: field names a client sent (which may hold
    characters UTF-8 cannot encode, such as a lone surrogate) are echoed safely."""

    media_type = PROBLEM_JSON

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")


def problem_response(
    problem: HTTPProblem, *, retry_after_seconds: int = DEFAULT_RETRY_AFTER_SECONDS
) -> Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": status_phrase(problem.status),
        "status": problem.status,
        "detail": problem.detail,
        "code": problem.code,
    }
    if problem.errors is not None:
        body["errors"] = problem.errors
    headers = dict(problem.headers)
    if problem.status == 503:
        headers.setdefault("Retry-After", str(retry_after_seconds))
    return ProblemResponse(body, status_code=problem.status, headers=headers)


def install_problem_handlers(
    app: FastAPI, *, retry_after_seconds: int = DEFAULT_RETRY_AFTER_SECONDS
) -> None:
    """Render every error of ``app`` as a problem: unknown routes (404), wrong methods (405),
    errors of routes not built by :func:`chathistory.http.router.build_router`, and bugs (500)."""

    async def handle(request: Request, exc: Exception) -> Response:
        problem = problem_from_exception(exc)
        if problem is None:
            return await server_error(request, exc)
        if problem.status == 405:
            problem.headers["Allow"] = allowed_methods(request)
        return problem_response(problem, retry_after_seconds=retry_after_seconds)

    async def server_error(request: Request, exc: Exception) -> Response:
        request_id = request.scope.get(REQUEST_ID_SCOPE_KEY, "-")
        log.error(
            "request %s %s failed (request id %s)",
            request.method,
            loggable_path(request.scope),
            request_id,
            exc_info=exc,
        )
        response = problem_response(
            HTTPProblem(
                500,
                f"an unexpected error occurred; it was logged with request id {request_id}",
                code="internal_error",
            )
        )
        response.headers["X-Request-ID"] = str(request_id)
        return response

    for exc_class in (
        StarletteHTTPException,
        RequestValidationError,
        ChatHistoryError,
        HTTPProblem,
    ):
        app.add_exception_handler(exc_class, handle)
    app.add_exception_handler(Exception, server_error)


def problem_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Document error responses (4xx, 5xx) as ``application/problem+json`` only.

    FastAPI files a response ``model`` under ``application/json``; this moves it (keeping any
    examples given for the problem media type) in an OpenAPI document, in place.
    """
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            for status, response in operation.get("responses", {}).items():
                if str(status)[:1] not in ("4", "5") or "content" not in response:
                    continue
                content = response["content"]
                plain = content.pop("application/json", None)
                if plain is not None:
                    merged = content.setdefault(PROBLEM_JSON, {})
                    for key, value in plain.items():
                        merged.setdefault(key, value)
    return schema


__all__ = [
    "DOMAIN_STATUS",
    "PROBLEM_JSON",
    "FieldProblem",
    "HTTPProblem",
    "Problem",
    "ProblemResponse",
    "install_problem_handlers",
    "loggable_path",
    "problem_from_exception",
    "problem_openapi",
    "problem_response",
    "status_phrase",
]
