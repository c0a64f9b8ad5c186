"""The password gate: with APP_PASSWORD set, nothing else runs until it is entered.

Guessing is throttled per client address across the whole process (sessions are free to
open, so a per-session delay stops nobody): after MAX_FAILURES wrong passwords an address
is locked out for LOCKOUT_S, and every lockout is logged.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from dataclasses import dataclass, field

import streamlit as st

from ui.model import settings

log = logging.getLogger(__name__)

WRONG_PASSWORD_DELAY_S = 1.0  # slows guessing within the allowance
MAX_FAILURES = 5  # wrong passwords from one address before it is locked out
LOCKOUT_S = 300.0  # and for how long; a failure after a lockout locks again at once


@dataclass
class LoginThrottle:
    """Wrong-password counts per client address, shared by every session of the process."""

    failures: dict[str, int] = field(default_factory=dict)
    locked_until: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_s(self, address: str, now: float | None = None) -> float:
        """Seconds until `address` may try again (0: it may try now)."""
        with self.lock:
            return max(0.0, self.locked_until.get(address, 0.0) - (now or time.monotonic()))

    def failed(self, address: str, now: float | None = None) -> None:
        with self.lock:
            count = self.failures.get(address, 0) + 1
            self.failures[address] = count
            if count >= MAX_FAILURES:
                self.locked_until[address] = (now or time.monotonic()) + LOCKOUT_S
                log.warning("Login locked for %s for %.0f s after %d wrong passwords", address, LOCKOUT_S, count)

    def succeeded(self, address: str) -> None:
        with self.lock:
            self.failures.pop(address, None)
            self.locked_until.pop(address, None)


# Module state rather than st.cache_resource: the count must survive cache clears.
login_throttle = LoginThrottle()


def client_address() -> str:
    # Behind a reverse proxy every client has the proxy's address: then the lockout is shared (README).
    return st.context.ip_address or "unknown"


def password_entered() -> bool:
    """Whether this browser session may use the app (no APP_PASSWORD, or it was entered)."""
    return not settings().app_password or bool(st.session_state.get("authenticated"))


def require_password() -> None:
    """Stop the page unless this browser session has entered APP_PASSWORD."""
    password = settings().app_password
    if password_entered():
        return
    st.title("🔒 GLM Workbench")
    with st.form("login"):
        attempt = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Enter")
    if submitted:
        throttle, address = login_throttle, client_address()
        if wait := throttle.wait_s(address):
            st.error(f"Too many wrong passwords from this address; try again in {wait:.0f} s.")
            st.stop()
        # Constant-time comparison; the password is never logged or put in the URL.
        if hmac.compare_digest(attempt.encode("utf-8"), password.encode("utf-8")):
            throttle.succeeded(address)
            st.session_state["authenticated"] = True
            st.rerun()
        throttle.failed(address)
        time.sleep(WRONG_PASSWORD_DELAY_S)
        st.error("Wrong password.")
    st.stop()
