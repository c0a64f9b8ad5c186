"""The API server over a ModelPool, driven by the official `openai` client on 127.0.0.1:
`/v1/models` lists every model, a request's `model` picks one (loaded on first use),
an unknown name is OpenAI's 404."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from glm_client import Settings
from glm_client.models import ModelPool
from glm_client.server import create_app, serve_in_thread
from glm_client.testing import ScriptedClient

USER = [{"role": "user", "content": "Hi"}]
MODELS = """
[models.alpha]
quantize = "4"

[models.beta]
base_url = "http://127.0.0.1:9/v1"
model = "b"

[models.gamma]
quantize = "8"
"""


class Named(ScriptedClient):
    """Answers every request with its own name; remembers being closed."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.closed = False

    def stream(self, messages, tools=None, *, cancel=None, **params):  # type: ignore[no-untyped-def]
        self.queue(f"from {self.name}")
        return super().stream(messages, tools, cancel=cancel, **params)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ModelPool, dict[str, Named], openai.OpenAI, str]]:
    (tmp_path / "models.toml").write_text(MODELS)
    loaded: dict[str, Named] = {}

    def load(settings: Settings, _progress: object) -> Named:
        name = {"4": "alpha", "8": "gamma"}[settings.quantize] if not settings.openai_base_url else "beta"
        loaded[name] = Named(name)
        return loaded[name]

    pool = ModelPool(Settings.from_env({"MODELS_FILE": str(tmp_path / "models.toml")}), load)  # type: ignore[arg-type]
    with serve_in_thread(create_app(pool)) as url:
        yield pool, loaded, openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30), url


def test_models_lists_every_model_before_any_is_loaded(served) -> None:  # type: ignore[no-untyped-def]
    pool, loaded, api, url = served
    assert [model.id for model in api.models.list()] == ["alpha", "beta", "gamma"]
    assert loaded == {} and pool.loaded() == []
    assert httpx.get(url + "/health").json() == {"status": "ok", "model": "alpha"}
    api.chat.completions.create(model="alpha", messages=USER)
    listed = {model["id"]: model for model in httpx.get(url + "/v1/models").json()["data"]}
    assert listed["alpha"]["max_model_len"] == 4096  # a loaded local model says its context
    assert "max_model_len" not in listed["gamma"]  # an unloaded one would have to load to know


def test_requests_are_routed_by_model(served) -> None:  # type: ignore[no-untyped-def]
    pool, loaded, api, url = served
    completion = api.chat.completions.create(model="beta", messages=USER)
    assert (completion.choices[0].message.content, completion.model) == ("from beta", "beta")
    assert pool.loaded() == ["beta"]  # only what was asked for is loaded
    completion = api.chat.completions.create(model="alpha", messages=USER)
    assert (completion.choices[0].message.content, completion.model) == ("from alpha", "alpha")
    chunks = list(api.chat.completions.create(model="beta", messages=USER, stream=True))
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) == "from beta"
    assert {chunk.model for chunk in chunks} == {"beta"}
    # No model (the openai client always sends one; others may not): the default, the file's first.
    response = httpx.post(url + "/v1/chat/completions", json={"messages": USER})
    assert response.json()["choices"][0]["message"]["content"] == "from alpha"
    assert len(loaded["alpha"].requests) == 2 and len(loaded["beta"].requests) == 2


def test_one_local_model_at_a_time_behind_the_server(served) -> None:  # type: ignore[no-untyped-def]
    pool, loaded, api, _url = served
    api.chat.completions.create(model="alpha", messages=USER)
    api.chat.completions.create(model="beta", messages=USER)
    completion = api.chat.completions.create(model="gamma", messages=USER)
    assert completion.choices[0].message.content == "from gamma"
    assert pool.loaded() == ["beta", "gamma"]  # MAX_LOADED_MODELS=1: alpha made room; the server's client stays
    assert loaded["alpha"].closed and not loaded["beta"].closed


def test_an_unknown_model_is_openais_404(served) -> None:  # type: ignore[no-untyped-def]
    _pool, loaded, api, url = served
    message = "There is no model named 'gpt-4'; the models are: alpha, beta, gamma."
    with pytest.raises(openai.NotFoundError) as error:
        api.chat.completions.create(model="gpt-4", messages=USER)
    assert error.value.status_code == 404
    assert error.value.body == {
        "message": message,
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    with pytest.raises(openai.NotFoundError, match="There is no model named 'gpt-4'"):
        list(api.chat.completions.create(model="gpt-4", messages=USER, stream=True))
    assert loaded == {}  # nothing was loaded for it
    response = httpx.post(url + "/v1/chat/completions", json={"model": 4, "messages": USER})
    assert response.status_code == 400 and response.json()["error"]["param"] == "model"


def test_one_model_without_a_file_answers_any_name(tmp_path: Path) -> None:
    """Without MODELS_FILE (`make serve` as before) the one model answers whatever name a client sends."""
    client = ScriptedClient(["hello"])
    pool = ModelPool(Settings.from_env({}), lambda _settings, _progress: client)
    with serve_in_thread(create_app(pool)) as url:
        api = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)
        assert [model.id for model in api.models.list()] == [pool.default]
        completion = api.chat.completions.create(model="gpt-3.5-turbo", messages=USER)
        assert (completion.choices[0].message.content, completion.model) == ("hello", pool.default)
