"""PostgreSQL, for a server database named by DATABASE_URL (needs the `psycopg` package)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from store.images import ImageFiles
from store.sql import Run, SqlStore

PSYCOPG_REQUIREMENT = "psycopg[binary]==3.3.9"


class PostgresStore(SqlStore):
    # Two app processes starting at once must not race on CREATE TABLE IF NOT EXISTS.
    schema_prelude = ("SELECT pg_advisory_xact_lock(7064531)",)

    def __init__(self, url: str, images: ImageFiles) -> None:
        try:
            import psycopg
        except ImportError:
            raise ValueError(
                f"DATABASE_URL names a PostgreSQL database but the psycopg package is not installed "
                f"(pip install '{PSYCOPG_REQUIREMENT}')."
            ) from None
        self._psycopg = psycopg
        self._url = url
        self._lock = threading.RLock()  # one connection shared by all threads, one transaction at a time
        self._connection = self._connect()
        super().__init__(images)

    def _connect(self) -> Any:
        try:
            return self._psycopg.connect(self._url, autocommit=True)
        except self._psycopg.OperationalError as error:
            reason = " ".join(str(error).split())
            raise ConnectionError(f"Cannot connect to the PostgreSQL database in DATABASE_URL: {reason}") from None

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[Run]:
        with self._lock, ExitStack() as stack:
            for attempt in (1, 2):
                if self._connection.closed or self._connection.broken:
                    self._connection = self._connect()  # the server restarted or the network dropped
                try:
                    stack.enter_context(self._connection.transaction())
                    break
                except self._psycopg.OperationalError:
                    # A connection the server closed (a restart) is only found out by using it: here, at
                    # BEGIN, before anything of this transaction ran, so a fresh connection may try it again.
                    if attempt == 2 or not self._connection.broken:
                        raise
            with self._connection.cursor() as cursor:

                def run(sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
                    cursor.execute(sql.replace("?", "%s"), params)
                    return cursor.fetchall() if cursor.description else []

                yield run

    def close(self) -> None:
        with self._lock:
            self._connection.close()
