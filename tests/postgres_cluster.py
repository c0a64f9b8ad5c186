"""A throwaway PostgreSQL cluster on a unix socket in a temporary folder, for the store's tests and bench_faults.

Needs Debian's postgresql server binaries (`make test` installs them); as root, it runs
the server as the `postgres` user, since initdb refuses root. Where either is missing,
starting one raises PostgresUnavailable with the reason, for the caller to skip.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path


class PostgresUnavailable(Exception):
    """No cluster can be started here; the message says why and how to fix it."""


class PostgresCluster:
    """`durable`: fsync on, as a real server runs (a restart then loses nothing); off, for fast tests."""

    def __init__(self, durable: bool = False) -> None:
        bin_dir = find_binaries()
        if bin_dir is None:
            raise PostgresUnavailable(
                "PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql"
            )
        self.root = Path(tempfile.mkdtemp(prefix="glm-pg-"))
        as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "running as root and there is no 'postgres' user to run the PostgreSQL server as"
                ) from None
            os.chown(self.root, user.pw_uid, user.pw_gid)
            as_user = ["runuser", "-u", "postgres", "--"]
        data = self.root / "data"
        self.pg_ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(self.root / "log")]
        initdb = [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8"]
        _run([*as_user, *initdb, "--locale=C", *([] if durable else ["--no-sync"])])
        self.options = f"-k {self.root} -c listen_addresses=''"
        if not durable:
            self.options += " -c fsync=off -c full_page_writes=off"
        _run([*self.pg_ctl, "-w", "-o", self.options, "start"])

    def url(self, schema: str = "public") -> str:
        return f"postgresql://postgres@/postgres?host={self.root}&options=-csearch_path%3D{schema}"

    def new_database(self) -> str:
        """A fresh schema: as empty as a new database, and made in milliseconds."""
        import psycopg

        schema = "store_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE SCHEMA {schema}")
        return self.url(schema)

    def restart(self) -> None:
        """A fast restart: the server closes every connection, and is back when this returns."""
        _run([*self.pg_ctl, "-w", "-m", "fast", "-o", self.options, "restart"])

    def stop(self) -> None:
        subprocess.run([*self.pg_ctl, "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


def find_binaries() -> Path | None:
    if initdb := shutil.which("initdb"):
        return Path(initdb).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {result.stdout}{result.stderr}")
