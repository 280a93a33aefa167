"""The HTTP face of chathistory (FastAPI). The only package that imports FastAPI.

from chathistory.http import create_app              # the whole service
from chathistory.http import build_router            # the API, mounted in a host app
"""

from chathistory.http.app import create_app
from chathistory.http.auth import (
    JWTVerifier,
    Principal,
    authenticator_from_settings,
    bearer_authenticator,
)
from chathistory.http.problems import HTTPProblem, Problem, install_problem_handlers
from chathistory.http.router import build_health_router, build_router

__all__ = [
    "HTTPProblem",
    "JWTVerifier",
    "Principal",
    "Problem",
    "authenticator_from_settings",
    "bearer_authenticator",
    "build_health_router",
    "build_router",
    "create_app",
    "install_problem_handlers",
]
