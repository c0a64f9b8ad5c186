"""Every live KernelSession of this process, so none outlives its use or the process."""

from __future__ import annotations

import atexit
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kernel.session import KernelSession

_live: set[KernelSession] = set()
_lock = threading.Lock()


def register(session: KernelSession) -> None:
    with _lock:
        _live.add(session)


def unregister(session: KernelSession) -> None:
    with _lock:
        _live.discard(session)


def live_sessions() -> list[KernelSession]:
    """Sessions with a running kernel (a browser tab may have gone without saying goodbye)."""
    with _lock:
        return list(_live)


def shutdown_idle(max_idle_s: float) -> list[KernelSession]:
    """Shut down sessions unused for longer than `max_idle_s`; returns them.

    The app calls this now and then to reap kernels of abandoned browser sessions.
    A session in the middle of an execution is never idle.
    """
    now = time.monotonic()
    idle = [s for s in live_sessions() if not s.busy and now - s.last_used > max_idle_s]
    for session in idle:
        session.shutdown()
    return idle


@atexit.register
def shutdown_all() -> None:
    """Kill every live kernel: registered at exit, so no kernel outlives the app."""
    for session in live_sessions():
        session.shutdown()
