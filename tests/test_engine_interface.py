"""The `Engine` protocol: both token engines follow it, and `LocalClient` takes nothing else."""

from __future__ import annotations

import inspect

import pytest

from glm_client import LocalClient
from glm_client.engines.base import Engine
from glm_client.engines.llamacpp import LlamaCppEngine
from glm_client.engines.transformers import TransformersEngine
from glm_client.testing import ScriptedClient


@pytest.mark.parametrize("engine", [TransformersEngine, LlamaCppEngine])
def test_generate_has_the_protocols_signature(engine):
    # isinstance() on a Protocol checks only that the names exist; this checks the call itself.
    assert inspect.signature(engine.generate) == inspect.signature(Engine.generate)


@pytest.mark.model
def test_the_transformers_engine_is_an_engine(embedded_client):
    fast = embedded_client.engine
    reference = TransformersEngine(fast.model, fast.tokenizer, fast.info)  # no packed path
    assert isinstance(fast, Engine)
    assert isinstance(reference, Engine)


@pytest.mark.model
def test_the_llamacpp_engine_is_an_engine(llama_client):
    assert isinstance(llama_client.engine, Engine)


def test_local_client_refuses_a_client_in_place_of_an_engine():
    with pytest.raises(TypeError, match=r"LocalClient needs an Engine .*, not a ScriptedClient; a Client such as"):
        LocalClient(ScriptedClient(), dialect=object())  # type: ignore[arg-type]
