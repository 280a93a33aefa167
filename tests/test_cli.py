"""Small CLI commands: token."""

from __future__ import annotations

import os
import subprocess
import sys

import jwt

SECRET = "a-test-secret-that-is-long-enough-0123456789"


def test_token_is_verifiable() -> None:
    env = {**os.environ, "CHATHISTORY_JWT_SECRET": SECRET, "CHATHISTORY_JWT_ISSUER": "me"}
    done = subprocess.run(
        [sys.executable, "-m", "chathistory.cli", "token", "alice", "--hours", "2"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    claims = jwt.decode(done.stdout.strip(), SECRET, algorithms=["HS256"], issuer="me")
    assert claims["sub"] == "alice"
    assert claims["exp"] - claims["iat"] == 7200


def test_token_needs_a_secret() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CHATHISTORY_JWT_SECRET"}
    done = subprocess.run(
        [sys.executable, "-m", "chathistory.cli", "token", "alice"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 1
    assert "CHATHISTORY_JWT_SECRET" in done.stderr
