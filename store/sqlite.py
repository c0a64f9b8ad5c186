"""SQLite: the default store, one file in the data directory, in WAL mode."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from store.images import ImageFiles
from store.sql import Run, SqlStore

BUSY_TIMEOUT_S = 30.0  # how long a writer waits for another process's transaction before giving up


class SqliteStore(SqlStore):
    def __init__(self, path: Path, images: ImageFiles) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One connection behind a lock rather than one per thread: Streamlit runs every
        # rerun in a fresh thread, and SQLite serialises writers anyway.
        self._lock = threading.RLock()
        self._connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        # WAL: readers never block the writer. synchronous=NORMAL keeps every committed
        # transaction when the process is killed (only a power cut may lose the last ones).
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=NORMAL")
        super().__init__(images)

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[Run]:
        with self._lock:
            cursor = self._connection.cursor()
            # IMMEDIATE takes the write lock up front, so a concurrent writer waits out
            # busy_timeout instead of failing with "database is locked" on upgrade.
            cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield lambda sql, params=(): cursor.execute(sql, params).fetchall()
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            else:
                cursor.execute("COMMIT")
            finally:
                cursor.close()

    def close(self) -> None:
        with self._lock:
            self._connection.close()
