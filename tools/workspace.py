"""The working directory of tools that touch files (the shell tool): the browser session's, when the page sets it."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

_current: ContextVar[Path | None] = ContextVar("tool_workdir", default=None)


@contextmanager
def tool_workdir(path: Path) -> Iterator[Path]:
    """Tools called inside this block work in `path` (dispatch carries it into the tool's thread)."""
    token = _current.set(path)
    try:
        yield path
    finally:
        _current.reset(token)


def current_workdir() -> Path:
    """The working directory set by `tool_workdir`, or this process's own (the CLI and scripts)."""
    return _current.get() or _process_workdir()


@functools.cache
def _process_workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="glm-tool-work-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
