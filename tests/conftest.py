"""Shared fixtures: the real embedded model (loaded once per test run) and a scripted model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from glm_client import LocalClient, Settings, load_client  # noqa: E402
from glm_client.testing import ScriptedClient  # noqa: E402


def load_embedded(engine: str) -> LocalClient:
    """The packaged SmolLM2 on `engine`, whatever MODEL_PATH or OPENAI_BASE_URL say."""
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_PATH", "OPENAI_BASE_URL")}
    client = load_client(Settings.from_env({**env, "ENGINE": engine}))
    assert isinstance(client, LocalClient)
    return client


@pytest.fixture(scope="session")
def embedded_client() -> LocalClient:
    """The packaged SmolLM2 on this machine's CPU: the real thing, shared by all tests.

    The transformers engine, even where the optional llama.cpp one is installed: these tests
    compare it with transformers' own forward (tests/test_llamacpp_engine.py covers llama.cpp).
    """
    return load_embedded("transformers")


@pytest.fixture(scope="module")
def llama_client() -> LocalClient:
    """The packaged SmolLM2 on the optional llama.cpp engine; skips where llama-cpp-python is missing."""
    pytest.importorskip("llama_cpp")
    return load_embedded("llamacpp")


@pytest.fixture
def scripted() -> ScriptedClient:
    return ScriptedClient()


@pytest.fixture
def page_model(monkeypatch, scripted: ScriptedClient) -> ScriptedClient:
    """A ScriptedClient the mode pages use as their model."""
    import ui.model

    monkeypatch.setattr(ui.model, "get_client", lambda _name=None: scripted)
    return scripted


@pytest.fixture(scope="module")
def live(request):
    """A ScriptedClient behind the project's API server on 127.0.0.1, one per test module:
    (model, base URL). A module's SERVER_OPTIONS are passed to create_app."""
    from glm_client.server import create_app, serve_in_thread

    model = ScriptedClient()
    with serve_in_thread(create_app(model, **getattr(request.module, "SERVER_OPTIONS", {}))) as url:
        yield model, url


@pytest.fixture
def server(live):
    """The module's live server with nothing queued or recorded from earlier tests."""
    model, url = live
    model.replies.clear()
    model.requests.clear()
    return model, url


@pytest.fixture(autouse=True)
def isolated_data_dir(monkeypatch, tmp_path):
    """Every test gets its own data directory: conversations and workspaces never leak between tests."""
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("APP_PASSWORD", raising=False)
    import ui.model
    import ui.state

    ui.model.settings.clear()
    ui.state.conversation_store.clear()
    yield tmp_path / "data"
    ui.state.conversation_store.clear()
    ui.model.settings.clear()
