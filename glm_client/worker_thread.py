"""One function run on a daemon thread of its own, its outcome (value or exception) kept for the caller.

The caller chooses how to wait: `join` with a timeout (a tool call, tools/dispatch.py),
a polling loop (a kernel cell under a Streamlit page, kernel/executor.py), or relaying
messages until the work ends (model loading, glm_client/loader.py). A thread still
running when the caller gives up is abandoned, not stopped. Stdlib only, so importing it
loads no torch (tools/ imports it at its first call: `import tools` stays free of glm_client).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar, cast

T = TypeVar("T")


class WorkerThread(Generic[T]):
    """Starts `function()` on a new daemon thread named `name` (Python's default name when None)."""

    def __init__(self, function: Callable[[], T], name: str | None = None) -> None:
        self._function = function
        self._value: T | None = None
        self.error: BaseException | None = None  # what `function` raised, once the thread has ended
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._function()
        except BaseException as error:  # SystemExit and friends too: the caller decides what they mean
            self.error = error

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def result(self) -> T:
        """The function's value, or its exception re-raised on the calling thread."""
        if self._thread.is_alive():
            raise RuntimeError(f"{self._thread.name} is still running")
        if self.error is not None:
            raise self.error
        return cast(T, self._value)
