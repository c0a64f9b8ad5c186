"""The password gate: with APP_PASSWORD set, nothing else runs until it is entered.

A login is remembered by the browser for LOGIN_TTL_S in a cookie holding an expiry and its
HMAC (keyed by a secret of this process and the password): F5 does not ask again, while
a restart of the app or a new password does.

Guessing is throttled per client address across the whole process (sessions are free to
open, so a per-session delay stops nobody): after MAX_FAILURES wrong passwords an address
is locked out for LOCKOUT_S, and every lockout is logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
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

LOGIN_COOKIE = "glm_workbench_login"
LOGIN_TTL_S = 12 * 3600
_LOGIN_SECRET = secrets.token_bytes(32)  # per process: a restarted app asks again


def login_token(password: str, expires_at: int) -> str:
    mac = hmac.new(_LOGIN_SECRET + password.encode("utf-8"), str(expires_at).encode(), hashlib.sha256).hexdigest()
    return f"{expires_at}.{mac}"


def token_is_valid(token: object, password: str, now: float | None = None) -> bool:
    if not isinstance(token, str):  # no cookie
        return False
    expires, _, _mac = token.partition(".")
    if not expires.isdigit() or int(expires) < (now or time.time()):
        return False
    return hmac.compare_digest(login_token(password, int(expires)), token)


def remember_login(password: str) -> None:
    """Once per session after a login: the browser keeps a token, so a reload is let in."""
    if st.session_state.get("login_remembered"):
        return
    st.session_state["login_remembered"] = True
    cookie = f"{LOGIN_COOKIE}={login_token(password, int(time.time() + LOGIN_TTL_S))}"
    attributes = f"; path=/; max-age={int(LOGIN_TTL_S)}; SameSite=Strict"
    script = (
        f"document.cookie = {json.dumps(cookie + attributes)} + (location.protocol === 'https:' ? '; Secure' : '');"
    )
    st.html(f"<script>{script}</script>", unsafe_allow_javascript=True)


def client_address() -> str:
    # Behind a reverse proxy every client has the proxy's address: then the lockout is shared (README).
    return st.context.ip_address or "unknown"


def password_entered() -> bool:
    """Whether this browser session may use the app (no APP_PASSWORD, or it was entered here or before F5)."""
    password = settings().app_password
    if not password or st.session_state.get("authenticated"):
        return True
    if token_is_valid(st.context.cookies.get(LOGIN_COOKIE), password):
        st.session_state["authenticated"] = st.session_state["login_remembered"] = True
        return True
    return False


def require_password() -> None:
    """Stop the page unless this browser session has entered APP_PASSWORD."""
    password = settings().app_password
    if password_entered():
        if password:
            remember_login(password)
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
