"""Capture what one thread prints, while other threads keep printing normally.

`contextlib.redirect_stdout` swaps `sys.stdout` for the whole process, so two tools
running at once (or the web server logging meanwhile) would mix their output. Instead
`sys.stdout` is wrapped once in a router that sends each write to the calling
thread's buffer when it has one, and to the real stream otherwise.
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

_install_lock = threading.Lock()


class ThreadRoutedStream:
    """A stand-in for `sys.stdout` that routes writes per thread."""

    def __init__(self, fallback: TextIO) -> None:
        self.fallback = fallback
        self._local = threading.local()

    def _target(self) -> TextIO:
        buffer = getattr(self._local, "buffer", None)
        return self.fallback if buffer is None else buffer

    def write(self, text: str) -> int:
        return self._target().write(text)

    def writelines(self, lines: Any) -> None:
        self._target().writelines(lines)

    def flush(self) -> None:
        self._target().flush()

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno, ... of the real stream
        return getattr(self.fallback, name)


def _router() -> ThreadRoutedStream:
    # Re-checked on every call: a test runner or another library may have replaced sys.stdout since.
    with _install_lock:
        if not isinstance(sys.stdout, ThreadRoutedStream):
            sys.stdout = ThreadRoutedStream(sys.stdout)
        return sys.stdout


@contextmanager
def capture_stdout() -> Iterator[io.StringIO]:
    """Collect what the current thread prints inside the block; other threads are unaffected.

    Threads that the captured code starts itself print to the real stdout.
    """
    router = _router()
    buffer = io.StringIO()
    previous = getattr(router._local, "buffer", None)
    router._local.buffer = buffer
    try:
        yield buffer
    finally:
        router._local.buffer = previous
