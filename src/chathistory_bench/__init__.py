"""``chathistory bench``: the store's speed against real PostgreSQL, next to its floors.

Every figure comes from one run on one machine; compare the ratios, not the absolute numbers
(they move with the machine and its load). Fixtures are written with bulk SQL (not timed); the
library is timed through ``ChatHistory``'s public methods, each next to its floor (raw asyncpg,
one statement, the same statement handling) in alternating rounds.

- :mod:`~chathistory_bench.scenarios`: the operations, library against floor, per mode;
- :mod:`~chathistory_bench.library` / :mod:`~chathistory_bench.floors`: the two sides;
- :mod:`~chathistory_bench.rounds`: timing in alternating rounds;
- :mod:`~chathistory_bench.fixtures`: bulk set-up and integrity checks;
- :mod:`~chathistory_bench.search`: search against reading the newest 50, and its plans, on
  PostgreSQL and on SQLite;
- :mod:`~chathistory_bench.purge`: other users' appends while a purge of 100,000 runs;
- :mod:`~chathistory_bench.branches`: the active branch of a branched 100,000 against 100,
  and against a conversation of the same size that never branched;
- :mod:`~chathistory_bench.storage`: bytes per message and the append's tail, against
  langchain-postgres's table;
- :mod:`~chathistory_bench.capacity`: the users the service and its bare-ASGI floor hold, and
  the plot;
- :mod:`~chathistory_bench.migrations`: an upgrade of 1,000,000 messages under load;
- :mod:`~chathistory_bench.load`: the HTTP service under load (clients in ``__main__``);
- :mod:`~chathistory_bench.report`: figures, ratios, tables and JSON.
"""

from chathistory_bench.branches import BranchSizes, run_branches
from chathistory_bench.capacity import CapacityPlan, run_capacity
from chathistory_bench.embedded import with_embedded_server
from chathistory_bench.load import LoadPlan, run_load
from chathistory_bench.migrations import MigrationSizes, run_migrations
from chathistory_bench.open_loop import OpenLoopPlan
from chathistory_bench.purge import PurgeSizes, run_purge
from chathistory_bench.report import Figure, Ratio, Report, render, write_json
from chathistory_bench.scenarios import Sizes, run
from chathistory_bench.search import SearchSizes, run_search, run_search_sqlite
from chathistory_bench.storage import StorageSizes, run_storage

__all__ = [
    "BranchSizes",
    "CapacityPlan",
    "Figure",
    "LoadPlan",
    "MigrationSizes",
    "OpenLoopPlan",
    "PurgeSizes",
    "Ratio",
    "Report",
    "SearchSizes",
    "Sizes",
    "StorageSizes",
    "render",
    "run",
    "run_branches",
    "run_capacity",
    "run_load",
    "run_migrations",
    "run_purge",
    "run_search",
    "run_search_sqlite",
    "run_storage",
    "with_embedded_server",
    "write_json",
]
