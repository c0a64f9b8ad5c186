"""APP_PASSWORD: the app asks for it before anything else."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import ui.access
import ui.model
from glm_client.testing import ScriptedClient

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture
def app(monkeypatch):
    monkeypatch.setenv("APP_PASSWORD", "correct horse")
    monkeypatch.setattr(ui.access, "WRONG_PASSWORD_DELAY_S", 0.0)
    client = ScriptedClient()
    loads = []
    monkeypatch.setattr(ui.model, "get_client", lambda _name=None: loads.append(1) or client)
    ui.model.settings.clear()
    application = AppTest.from_file(APP, default_timeout=60).run()
    application.loads = loads
    return application


def test_nothing_runs_before_the_password(app):
    assert app.title[0].value == "🔒 GLM Workbench"
    assert app.loads == [] and len(app.chat_input) == 0


def test_a_wrong_password_is_refused(app):
    app.text_input(key="login_password").input("guess")
    app.button[0].click().run()
    assert [error.value for error in app.error] == ["Wrong password."]
    assert app.loads == []


def test_the_right_password_opens_the_app(app):
    app.text_input(key="login_password").input("correct horse")
    app.button[0].click().run()
    assert not app.exception
    assert app.loads and len(app.chat_input) == 1
    assert "correct horse" not in str(app.query_params)


def test_without_a_password_the_app_opens_directly(monkeypatch):
    monkeypatch.delenv("APP_PASSWORD", raising=False)
    monkeypatch.setattr(ui.model, "get_client", lambda _name=None: ScriptedClient())
    ui.model.settings.clear()
    application = AppTest.from_file(APP, default_timeout=60).run()
    assert len(application.chat_input) == 1


def test_guessing_from_many_sessions_locks_the_address_out(monkeypatch, caplog):
    """Sessions are free: the lockout counts wrong passwords per address across all of them."""
    monkeypatch.setenv("APP_PASSWORD", "correct horse")
    monkeypatch.setattr(ui.access, "WRONG_PASSWORD_DELAY_S", 0.0)
    monkeypatch.setattr(ui.model, "get_client", lambda _name=None: ScriptedClient())
    ui.model.settings.clear()
    monkeypatch.setattr(ui.access, "login_throttle", ui.access.LoginThrottle())
    monkeypatch.setattr(ui.access, "client_address", lambda: "203.0.113.7")  # AppTest has no real peer address
    for guess in range(ui.access.MAX_FAILURES):
        session = AppTest.from_file(APP, default_timeout=60).run()  # a fresh session for every guess
        session.text_input(key="login_password").input(f"guess {guess}")
        session.button[0].click().run()
        assert [error.value for error in session.error] == ["Wrong password."]
    late = AppTest.from_file(APP, default_timeout=60).run()
    late.text_input(key="login_password").input("correct horse")  # even the right one, while locked out
    late.button[0].click().run()
    assert late.error[0].value.startswith("Too many wrong passwords from this address; try again in")
    assert len(late.chat_input) == 0
    assert "Login locked for" in caplog.text


def test_a_lockout_ends_and_a_success_clears_the_count():
    throttle = ui.access.LoginThrottle()
    for _ in range(ui.access.MAX_FAILURES):
        throttle.failed("10.0.0.1", now=100.0)
    assert throttle.wait_s("10.0.0.1", now=100.0) == ui.access.LOCKOUT_S
    assert throttle.wait_s("10.0.0.2", now=100.0) == 0.0  # other addresses are not affected
    assert throttle.wait_s("10.0.0.1", now=100.0 + ui.access.LOCKOUT_S) == 0.0
    throttle.succeeded("10.0.0.1")
    throttle.failed("10.0.0.1", now=1000.0)
    assert throttle.wait_s("10.0.0.1", now=1000.0) == 0.0


def test_a_remembered_login_holds_until_it_expires_or_the_password_changes():
    from ui.access import login_token, token_is_valid

    token = login_token("team", expires_at=2_000)
    assert token_is_valid(token, "team", now=1_000)
    assert not token_is_valid(token, "team", now=2_001)  # expired
    assert not token_is_valid(token, "new password", now=1_000)
    assert not token_is_valid(token.replace("2000.", "9999."), "team", now=1_000)  # a forged expiry
    assert not token_is_valid(None, "team") and not token_is_valid("garbage", "team")
