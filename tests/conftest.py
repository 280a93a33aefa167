"""The suite's fixtures come from plugins: real databases and stores
(``tests/fixtures/databases.py``) and the HTTP API in process (``tests/fixtures/http.py``).
Shared helpers that are not fixtures live in ``tests/support/``."""

pytest_plugins = ("tests.fixtures.databases", "tests.fixtures.http")
