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
    monkeypatch.setattr(ui.model, "get_client", lambda: loads.append(1) or client)
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
    monkeypatch.setattr(ui.model, "get_client", lambda: ScriptedClient())
    ui.model.settings.clear()
    application = AppTest.from_file(APP, default_timeout=60).run()
    assert len(application.chat_input) == 1
