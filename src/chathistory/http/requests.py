"""Request bodies as the client sent them: strict JSON (no NaN, no duplicate-free guessing, a
depth limit), the JSON media type required, and the route class that renders every error of a
route as a problem."""

import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Final

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import PlainValidator

from chathistory.http.problems import (
    DEFAULT_RETRY_AFTER_SECONDS,
    HTTPProblem,
    problem_from_exception,
    problem_response,
)
from chathistory.schemas import (
    ConversationCreate,
    ConversationUpdate,
    MessageCreate,
)
from chathistory.schemas.items import ItemsCreate
from chathistory.schemas.streaming import MessageUpdate

# -- request bodies ---------------------------------------------------------------------------


def _as_sent(value: Any) -> Any:
    if isinstance(value, _MalformedJSON):  # only if a route forgot require_json
        raise ValueError("the body is not valid JSON")
    return value


# Any JSON at all, passed on untouched, documented in OpenAPI as the store's input model: the
# store validates it, so a bad field is reported once, by the rules that own it.
ConversationCreateBody = Annotated[
    Any, PlainValidator(_as_sent, json_schema_input_type=ConversationCreate)
]
ConversationUpdateBody = Annotated[
    Any, PlainValidator(_as_sent, json_schema_input_type=ConversationUpdate)
]
MessageUpdateBody = Annotated[Any, PlainValidator(_as_sent, json_schema_input_type=MessageUpdate)]
ItemsBody = Annotated[Any, PlainValidator(_as_sent, json_schema_input_type=ItemsCreate)]
MessagesBody = Annotated[
    Any, PlainValidator(_as_sent, json_schema_input_type=MessageCreate | list[MessageCreate])
]


# How deep arrays and objects may nest in a whole request body, checked as it is parsed (before
# authentication and validation): it bounds the work a hostile body costs the parser. Looser
# than the storage rule (chathistory.schemas.MAX_JSON_DEPTH, 32, counted from a field's value)
# because a body nests its fields inside an envelope (a batch's array, a message's object), and
# because a field nested too deep for the store should get the store's answer naming the field
# (422), not this blunt 400: it must stay well above the storage rule plus the envelope.
MAX_BODY_JSON_DEPTH: Final = 64


def strict_json_loads(body: bytes) -> Any:
    """RFC 8259 JSON: UTF-8, no ``NaN`` / ``Infinity``, nested at most :data:`MAX_BODY_JSON_DEPTH`
    arrays and objects deep (a chat message needs a handful); any failure is a
    ``JSONDecodeError``."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError("the body is not UTF-8", "", exc.start) from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise json.JSONDecodeError(exc.msg, "", exc.pos) from None
    except RecursionError:
        value = _TOO_DEEP
    except ValueError as exc:  # NaN / Infinity, or an integer too long to convert
        raise json.JSONDecodeError(str(exc), "", 0) from None
    if value is _TOO_DEEP or _depth(value) > MAX_BODY_JSON_DEPTH:
        raise json.JSONDecodeError(
            f"arrays and objects are nested more than {MAX_BODY_JSON_DEPTH} deep", "", 0
        )
    return value


_TOO_DEEP: Final = object()


def _depth(value: Any) -> int:
    """How deep arrays and objects nest in ``value`` (without recursion)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        level += 1
        if level > deepest:
            deepest = level
            if deepest > MAX_BODY_JSON_DEPTH:
                break
        stack.extend((child, level) for child in children)
    return deepest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


class _MalformedJSON:
    """What a body that is not JSON parses to, so the error is reported after authentication
    (by :func:`require_json`) rather than while FastAPI reads the body."""

    def __init__(self, error: json.JSONDecodeError) -> None:
        self.error = error


class StrictJSONRequest(Request):
    """A request whose ``json()`` is :func:`strict_json_loads`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json: Any = strict_json_loads(await self.body())
            except json.JSONDecodeError as exc:
                self._json = _MalformedJSON(exc)
        return self._json


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def require_json(request: Request) -> None:
    """A body, when there is one, must be sent as ``application/json`` (else 415) and be
    JSON (else 400). Runs after authentication, so a stranger learns nothing from it."""
    if not await request.body():
        return
    if not _is_json(request.headers.get("content-type", "")):
        accepts = "Accept-Patch" if request.method == "PATCH" else "Accept-Post"
        raise HTTPProblem(
            415,
            "the request body must be JSON, sent with Content-Type: application/json",
            headers={accepts: "application/json"},
        )
    parsed = await request.json()
    if isinstance(parsed, _MalformedJSON):
        raise HTTPProblem(
            400, f"the body is not valid JSON: {parsed.error.msg}", code="malformed_json"
        )


# -- problem rendering for the routes ---------------------------------------------------------


def problem_route_class(
    *, retry_after_seconds: int = DEFAULT_RETRY_AFTER_SECONDS
) -> type[APIRoute]:
    """A route class that parses JSON strictly and answers errors as problems by itself, so a
    host application that mounts the router gets problem responses without installing
    exception handlers."""

    class ProblemRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    return await handler(StrictJSONRequest(request.scope, request.receive))
                except Exception as exc:
                    problem = problem_from_exception(exc)
                    if problem is None:
                        raise
                    return problem_response(problem, retry_after_seconds=retry_after_seconds)

            return handle

    return ProblemRoute
