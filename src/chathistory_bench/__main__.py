"""The HTTP load clients' own process (started by :func:`chathistory_bench.run_load`):
``python -m chathistory_bench [open-loop] BASE_URL SECRET USERS_JSON PLAN_JSON`` prints the
result as JSON."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from chathistory_bench.load import LoadPlan, load_clients
from chathistory_bench.open_loop import OpenLoopPlan, open_loop_clients


def main(argv: list[str]) -> None:
    if len(argv) == 5 and argv[0] == "open-loop":
        base, secret, users, plan = argv[1:]
        opened = asyncio.run(
            open_loop_clients(
                base, secret, json.loads(Path(users).read_text()), OpenLoopPlan(**json.loads(plan))
            )
        )
        print(json.dumps(opened))
        return
    if len(argv) != 4:
        raise SystemExit(__doc__)
    base, secret, users, plan = argv
    result = asyncio.run(
        load_clients(
            base, secret, json.loads(Path(users).read_text()), LoadPlan(**json.loads(plan))
        )
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
