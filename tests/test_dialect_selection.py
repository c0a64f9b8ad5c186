"""Which dialect a loaded model gets: ChatGLM3's own format for ChatGLM3, its chat template otherwise."""

from __future__ import annotations

import dataclasses

import pytest
from chatglm3_tokenizer import ChatGLMTokenizer, train_sentencepiece

from glm_client import ModelLoadError
from glm_client.engines.base import EngineInfo
from glm_client.loader import pick_dialect


@dataclasses.dataclass
class FakeEngine:
    tokenizer: object
    info: EngineInfo


def engine(tokenizer: object, model_type: str) -> FakeEngine:
    return FakeEngine(tokenizer, EngineInfo("m", "cpu", "float32", 8192, model_type))


@pytest.fixture(scope="module")
def chatglm3_tokenizer(tmp_path_factory):
    return ChatGLMTokenizer(train_sentencepiece(tmp_path_factory.mktemp("sp")))


class NoTemplate:
    chat_template = None


def test_a_chatglm3_checkpoint_gets_the_native_dialect(chatglm3_tokenizer):
    assert pick_dialect(engine(chatglm3_tokenizer, "chatglm")).name == "chatglm3"


def test_dialect_chatglm3_can_be_asked_for_explicitly(chatglm3_tokenizer):
    assert pick_dialect(engine(chatglm3_tokenizer, "llama"), "chatglm3").name == "chatglm3"


def test_a_chatglm_model_without_chatglm3_tokens_is_not_taken_for_chatglm3():
    # ChatGLM2 / GLM-4 share model_type "chatglm"; without a chat template that is a clear error.
    with pytest.raises(ModelLoadError, match="no chat template"):
        pick_dialect(engine(NoTemplate(), "chatglm"))


def test_other_models_get_their_chat_template(embedded_client):
    assert pick_dialect(engine(embedded_client.engine.tokenizer, "llama")).name == "chat_template"
