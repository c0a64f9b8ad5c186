"""The kernel that works in a conversation's directory.

A browser session holds one kernel, serving the conversation it has open: opening another
conversation gives another kernel (the first one's variables never leak into it);
reopening a conversation whose kernel is gone starts a fresh kernel on the same directory.
"""

from __future__ import annotations

import contextlib
import threading

import streamlit as st

from kernel import KernelSession, KernelUnavailable
from ui.model import settings
from ui.workspace import conversation_workdir, remove_if_unused, sweep_orphan_workspaces


class KernelSlot:
    """A browser session's kernel, serving one conversation at a time."""

    def __init__(self) -> None:
        self.kernel: KernelSession | None = None
        self.conversation_id: str | None = None
        self._lock = threading.Lock()

    def kernel_for(self, conversation_id: str) -> KernelSession:
        """The kernel of `conversation_id`: the one running, or a fresh one (pre-warmed while the page draws)."""
        with self._lock:
            if self.kernel is not None and (self.conversation_id != conversation_id or self.kernel.closed):
                self._release()
            if self.kernel is None:
                memory = settings().kernel_memory_mb * 1024 * 1024
                self.kernel = KernelSession(conversation_workdir(conversation_id), memory_limit_bytes=memory)
                self.conversation_id = conversation_id
                threading.Thread(target=_prewarm, args=(self.kernel,), daemon=True).start()
            return self.kernel

    def release(self) -> None:
        with self._lock:
            self._release()

    def _release(self) -> None:
        if self.kernel is not None:
            self.kernel.shutdown()
        if self.conversation_id is not None:
            remove_if_unused(self.conversation_id)
        self.kernel, self.conversation_id = None, None


def _prewarm(kernel: KernelSession) -> None:
    with contextlib.suppress(KernelUnavailable):  # the first run reports it, in words
        kernel.start()


@st.cache_resource(scope="session", show_spinner=False, on_release=lambda slot: slot.release())
def session_kernel_slot() -> KernelSlot:
    """One per browser session; its kernel is shut down when the session ends (or after idling)."""
    sweep_orphan_workspaces()
    return KernelSlot()
