"""The service's ASGI middleware, one per module (as Starlette keeps its own).

:func:`~chathistory.http.app.create_app` stacks them, outermost first: CORS (Starlette's, when
origins are configured), :class:`RequestContextMiddleware` (the request id and the request
log), :class:`BodyLimitMiddleware` (413 for a body over ``max_body_bytes``), then, with bearer
tokens and ``fast_lane`` on, :class:`FastLane` (the hot reads and appends of messages). The
bounds on the request head and on slow clients sit below ASGI, in the uvicorn protocols of
:mod:`chathistory.http.server`.
"""

from chathistory.http.middleware.body_limit import BodyLimitMiddleware
from chathistory.http.middleware.fast_lane import FastLane
from chathistory.http.middleware.request_context import (
    REQUEST_ID_HEADER,
    RequestContextMiddleware,
)

__all__ = ["REQUEST_ID_HEADER", "BodyLimitMiddleware", "FastLane", "RequestContextMiddleware"]
