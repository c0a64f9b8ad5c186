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


@pytest.fixture(scope="session")
def embedded_client() -> LocalClient:
    """The packaged SmolLM2 on this machine's CPU: the real thing, shared by all tests."""
    client = load_client(
        Settings.from_env({k: v for k, v in os.environ.items() if k not in ("MODEL_PATH", "OPENAI_BASE_URL")})
    )
    assert isinstance(client, LocalClient)
    return client


@pytest.fixture
def scripted() -> ScriptedClient:
    return ScriptedClient()
