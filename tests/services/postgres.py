"""A throwaway PostgreSQL cluster for tests: Debian's initdb/pg_ctl into a temp dir, trust auth on 127.0.0.1."""

import glob
import itertools
import os
import shutil
import stat
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..server import free_port

MISSING = "PostgreSQL's server binaries (initdb, pg_ctl) are not installed; run `make services`"


def _bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and pg_ctl."""
    found = [Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin") if os.access(Path(d) / "initdb", os.X_OK)]
    if not found:
        raise RuntimeError(MISSING)
    return max(found, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)


def _as_owner(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: there, they run as the `postgres` system user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _own(root: Path) -> None:
    """Give the cluster dir to `postgres` when running as root; its parents must let that user through."""
    if os.geteuid() != 0:
        return
    shutil.chown(root, "postgres", "postgres")
    for parent in root.parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            raise RuntimeError(f"{parent} is not traversable by the postgres user; set TMPDIR to a folder that is")


class Cluster:
    """A running cluster: `create_database()` gives each caller an empty database of its own."""

    def __init__(self, port: int):
        self.port = port
        self._names = itertools.count()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """Create an empty database (from template0) and return its SQLAlchemy URL."""
        name = f"loupe_{next(self._names)}"
        with self._admin() as connection:
            # file_copy (PostgreSQL 15+) copies the tiny template faster than WAL-logging it
            strategy = " STRATEGY file_copy" if connection.info.server_version >= 150000 else ""
            connection.execute(f'CREATE DATABASE "{name}" TEMPLATE template0{strategy}')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database at `url`, closing connections a test left open (PostgreSQL 13+)."""
        with self._admin() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')

    @contextmanager
    def database(self):
        """A new database's URL for the `with` block; dropped after it."""
        url = self.create_database()
        try:
            yield url
        finally:
            self.drop_database(url)

    def _admin(self):
        import psycopg

        return psycopg.connect(self.url().replace("+psycopg", ""), autocommit=True)


@contextmanager
def postgres_cluster():
    """Start a fresh cluster on a free port (durability off: it is thrown away), yield it, stop it
    and delete its files."""
    bin_dir = _bin_dir()
    root = Path(tempfile.mkdtemp(prefix="loupe-pg-"))
    os.chmod(root, 0o700)
    _own(root)
    data, log = root / "data", root / "server.log"
    run = lambda *args: subprocess.run(_as_owner([str(bin_dir / args[0]), *args[1:]]), check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync")
        port = free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='' -c max_connections=300 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        try:
            run("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options, "start")
        except subprocess.CalledProcessError as error:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {error.stderr}\n{tail}") from error
        try:
            yield Cluster(port)
        finally:
            run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
