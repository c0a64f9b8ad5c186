"""MODELS_FILE and the model pool: the file read or refused in one sentence, the catalogue without it,
the pool's LRU unloading with a fake loader, and real switching between the embedded model at int4,
at bf16 and behind the project's own API server."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from glm_client import ConfigError, Done, LocalClient, Message, Settings, TextDelta
from glm_client.embedded import MODEL_NAME
from glm_client.models import ModelPool, ModelSpec, UnknownModel, model_catalogue, read_models_file
from glm_client.remote.openai import OpenAIClient
from glm_client.testing import ScriptedClient


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return str(path)


# --- the file ---------------------------------------------------------------------------


def test_a_file_lists_local_embedded_and_server_models_in_order(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    (tmp_path / "big.gguf").write_bytes(b"")
    path = write(
        tmp_path,
        """
[models.small-int4]
quantize = 4

[models."glm 6b"]
path = "weights"
engine = "transformers"
dtype = "BFloat16"
dialect = "chatglm3"

[models.gguf]
path = "big.gguf"

[models.api]
base_url = "http://127.0.0.1:8000/v1/"
api_key_env = "MY_KEY"
model = "glm-4"
""",
    )
    settings = Settings.from_env({"MODELS_FILE": f" {path} ", "MY_KEY": " sk-1 ", "MAX_LOADED_MODELS": "2"})
    assert settings.models_file == path and settings.max_loaded_models == 2
    small, glm, gguf, api = settings.models
    assert small == ModelSpec("small-int4", "local", quantize="4")
    assert glm == ModelSpec(
        "glm 6b", "local", path=str(tmp_path / "weights"), engine="transformers", dtype="bfloat16", dialect="chatglm3"
    )
    assert gguf.path == str(tmp_path / "big.gguf")  # relative to the file's folder, not the working directory
    assert api == ModelSpec("api", "openai", base_url="http://127.0.0.1:8000/v1", api_key="sk-1", model="glm-4")
    assert "sk-1" not in repr(api) and "sk-1" not in repr(settings)
    assert hash(settings) == hash(Settings.from_env({"MODELS_FILE": path, "MY_KEY": "sk-1", "MAX_LOADED_MODELS": "2"}))
    assert model_catalogue(settings) == settings.models


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[models.big]\npathh = 'x'\n",
            "[models.big] has an unknown key 'pathh'; allowed: path, engine, dtype, "
            "quantize, dialect (a local model) or base_url, api_key_env, model (a server).",
        ),
        (
            "[models.big]\nengine = 'auto'\npathh = 'x'\n",
            "[models.big] has an unknown key 'pathh'; allowed: path, engine, dtype, quantize, dialect.",
        ),
        (
            "[models.api]\nmodel = 'm'\nbase_url = 'http://h/v1'\nkey = 'k'\n",
            "[models.api] has an unknown key 'key'; allowed: base_url, api_key_env, model.",
        ),
        ("[models.big]\npath = 'missing/dir'\n", "[models.big] has path = 'missing/dir', which does not exist."),
        ("[models.big]\npath = ''\n", "[models.big] has an empty path; omit the key for the embedded model."),
        (
            "[models.mixed]\npath = '.'\nbase_url = 'http://h/v1'\n",
            "[models.mixed] has keys of two kinds, 'path' (a local model) and 'base_url' (an OpenAI-compatible server); "
            "describe one model per table.",
        ),
        (
            "[models.api]\nmodel = 'm'\n",
            "[models.api] is missing the key 'base_url'; an OpenAI-compatible server needs base_url and model.",
        ),
        (
            "[models.api]\nbase_url = 'http://h/v1'\n",
            "[models.api] is missing the key 'model'; an OpenAI-compatible server needs base_url and model.",
        ),
        (
            "[models.api]\nbase_url = 'ftp://u:pw@h/v1'\nmodel = 'm'\n",
            "[models.api] has base_url = 'ftp://…@h/v1', which is not valid; use an http(s) URL such as "
            "http://127.0.0.1:8000/v1.",
        ),
        (
            "[models.api]\nbase_url = 'http://h/v1'\nmodel = 'm'\napi_key_env = 'UNSET_KEY'\n",
            "[models.api] has api_key_env = 'UNSET_KEY', but that environment variable is not set.",
        ),
        (
            "[models.q]\nquantize = '3'\n",
            "[models.q] has quantize = '3', which is not valid; use one of: auto, none, 4, 8.",
        ),
        (
            "[models.d]\ndtype = 'int3'\n",
            "[models.d] has dtype = 'int3', which is not valid; use one of: auto, bfloat16, float16, float32.",
        ),
        (
            "[models.e]\nengine = 'vllm'\n",
            "[models.e] has engine = 'vllm', which is not valid; use one of: auto, transformers, llamacpp.",
        ),
        (
            "[models.e]\ndialect = 'qwen'\n",
            "[models.e] has dialect = 'qwen', which is not valid; use one of: auto, chat_template, chatglm3.",
        ),
        ("[models.e]\ndtype = 16\n", "[models.e] has dtype = 16; it must be a string in quotes."),
        ('[models."a b"]\nengine = 1\n', '[models."a b"] has engine = 1; it must be a string in quotes.'),
        ('[models." "]\n', "a [models.<name>] table has an empty name; give each model a name."),
        (
            "[models]\npath = 'x'\n",
            "[models.path] must be a table of settings, not a single value; write it as [models.path].",
        ),
        ("", "describes no models; add a [models.<name>] table for each one."),
        ("[model.big]\n", "has an unknown top-level key 'model'; put each model in a [models.<name>] table."),
        ("[models.big\n", "is not valid TOML: Expected ']' at the end of a table declaration (at line 1, column 12)."),
    ],
)
def test_a_bad_file_is_one_sentence_naming_the_file_the_table_and_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"MODELS_FILE": path})  # start-up stops here
    separator = ": " if expected.startswith(("[", "a ")) else " "
    assert str(error.value) == f"MODELS_FILE {path}{separator}{expected}"


def test_an_unreadable_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^MODELS_FILE .*nope\.toml cannot be read: No such file or directory\.$"):
        read_models_file(str(tmp_path / "nope.toml"), {})
    (tmp_path / "latin1.toml").write_bytes(b"[models.caf\xe9]\n")
    with pytest.raises(ConfigError, match=r"latin1\.toml is not UTF-8 text; save it as UTF-8\.$"):
        read_models_file(str(tmp_path / "latin1.toml"), {})


# --- without the file: the one model configured today -------------------------------------


@pytest.mark.parametrize(
    ("env", "name", "kind"),
    [
        ({}, MODEL_NAME, "local"),
        ({"MODEL_PATH": "/models/chatglm3-6b/", "DTYPE": "float32", "QUANTIZE": "8"}, "chatglm3-6b", "local"),
        ({"MODEL_PATH": "~/m/qwen.Q4.gguf", "ENGINE": "llamacpp"}, "qwen.Q4.gguf", "local"),
        ({"OPENAI_BASE_URL": "http://u:pw@10.0.0.2:8000/v1", "OPENAI_MODEL": "glm-4.5"}, "glm-4.5", "openai"),
        ({"OPENAI_BASE_URL": "http://u:pw@10.0.0.2:8000/v1", "OPENAI_THINKING_SWITCH": "1"}, "10.0.0.2:8000", "openai"),
    ],
)
def test_without_a_file_the_catalogue_is_the_configured_model(env: dict[str, str], name: str, kind: str) -> None:
    settings = Settings.from_env({**env, "OPENAI_API_KEY": "sk-2"})
    (spec,) = model_catalogue(settings)
    assert (spec.name, spec.kind) == (name, kind)
    assert spec.settings(settings) == settings  # the loader gets exactly what it got before there were several


def test_a_models_settings_replace_the_configured_model() -> None:
    base = Settings.from_env(
        {"OPENAI_BASE_URL": "http://h/v1", "OPENAI_MODEL": "m", "DEVICE": "cpu", "DTYPE": "float32"}
    )
    local = ModelSpec("small", "local", quantize="4").settings(base)
    assert (local.openai_base_url, local.model_path) == ("", "")
    assert (local.quantize, local.dtype, local.device) == ("4", "auto", "cpu")  # the table's values; DEVICE stays
    remote = ModelSpec("api", "openai", base_url="http://other/v1", api_key="k", model="x").settings(Settings())
    assert (remote.openai_base_url, remote.openai_api_key, remote.openai_model) == ("http://other/v1", "k", "x")


# --- the pool, with a fake loader ----------------------------------------------------------


class Fake(ScriptedClient):
    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Loads:
    """A loader that records each load (and each close, in the same log) and returns Fake clients."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.clients: dict[str, Fake] = {}

    def __call__(self, settings: Settings, progress: object) -> Fake:
        name = settings.openai_model or f"{settings.model_path or 'embedded'}@{settings.quantize}"
        self.log.append(f"load {name}")
        client = Fake(settings)
        original_close = client.close

        def close() -> None:
            self.log.append(f"close {name}")
            original_close()

        client.close = close  # type: ignore[method-assign]
        self.clients[name] = client
        return client


@pytest.fixture
def catalogue(tmp_path: Path) -> str:
    return write(
        tmp_path,
        """
[models.a]
quantize = "4"
[models.b]
quantize = "8"
[models.c]
quantize = "none"
[models.remote]
base_url = "http://127.0.0.1:9/v1"
model = "r"
""",
    )


def pool_of(catalogue: str, loads: Loads, max_loaded: int = 1) -> ModelPool:
    return ModelPool(Settings.from_env({"MODELS_FILE": catalogue, "MAX_LOADED_MODELS": str(max_loaded)}), loads)


def test_one_local_model_stays_loaded_and_the_older_one_is_closed_before_the_next_loads(catalogue: str) -> None:
    loads = Loads()
    pool = pool_of(catalogue, loads)
    assert (pool.names, pool.default, pool.loaded()) == (["a", "b", "c", "remote"], "a", [])
    a = pool.get()
    assert pool.get("a") is a and loads.log == ["load embedded@4"]  # loaded once
    assert a.settings.quantize == "4" and a.settings.openai_base_url == ""
    b = pool.get("b")
    assert loads.log == ["load embedded@4", "close embedded@4", "load embedded@8"]  # never two in memory
    assert pool.loaded() == ["b"] and a.closed and not b.closed
    remote = pool.get("remote")  # a server's client takes no room
    assert pool.loaded() == ["b", "remote"] and not b.closed
    assert remote.settings.openai_base_url == "http://127.0.0.1:9/v1"
    assert pool.get("a") is not a  # unloaded, so loaded afresh
    assert pool.loaded() == ["a", "remote"] and b.closed and not remote.closed
    pool.unload("remote")
    assert remote.closed and pool.loaded() == ["a"]
    pool.close()
    assert pool.loaded() == [] and loads.clients["embedded@4"].closed


def test_the_least_recently_used_local_model_goes_first(catalogue: str) -> None:
    loads = Loads()
    pool = pool_of(catalogue, loads, max_loaded=2)
    a, b = pool.get("a"), pool.get("b")
    pool.get("a")  # a is now the most recently used
    pool.get("c")
    assert pool.loaded() == ["a", "c"] and b.closed and not a.closed


def test_concurrent_gets_of_one_model_load_it_once(catalogue: str) -> None:
    release = threading.Event()
    loads = Loads()

    def slow(settings: Settings, progress: object) -> Fake:
        release.wait(10)
        return loads(settings, progress)

    pool = pool_of(catalogue, slow)  # type: ignore[arg-type]
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(pool.get("b"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)  # all are waiting on the one load
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(got) == 8 and all(client is got[0] for client in got)
    assert loads.log == ["load embedded@8"]


def test_a_failed_load_leaves_nothing_behind_and_is_tried_again(catalogue: str) -> None:
    loads = Loads()
    failures = [RuntimeError("disk on fire")]

    def flaky(settings: Settings, progress: object) -> Fake:
        if failures:
            raise failures.pop()
        return loads(settings, progress)

    pool = pool_of(catalogue, flaky)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="disk on fire"):
        pool.get("a")
    assert pool.loaded() == []
    assert pool.get("a") is loads.clients["embedded@4"]


def test_an_unknown_name_lists_the_known_ones(catalogue: str) -> None:
    pool = pool_of(catalogue, Loads())
    with pytest.raises(UnknownModel) as error:
        pool.get("gpt-4")
    assert str(error.value) == "There is no model named 'gpt-4'; the models are: a, b, c, remote."
    with pytest.raises(UnknownModel):
        pool.resolve("gpt-4")  # with a file, a request must name a listed model
    assert (pool.resolve(""), pool.resolve(None), pool.resolve("c")) == ("a", "a", "c")
    single = ModelPool(Settings.from_env({}), Loads())
    assert single.names == [MODEL_NAME]
    assert single.resolve("gpt-4") == MODEL_NAME  # one model: any name reaches it, as before there were several


# --- real switching: the embedded model at int4, at bf16, and behind the API server ----------------


@pytest.mark.model
@pytest.mark.slow
def test_switching_between_int4_bf16_and_a_server(tmp_path: Path, embedded_client: LocalClient) -> None:
    from glm_client.server import create_app, serve_in_thread

    question = [Message.user("What is the capital of France?")]
    greedy = {"temperature": 0.0, "max_new_tokens": 6}
    with serve_in_thread(create_app(embedded_client)) as url:
        path = write(
            tmp_path,
            f"""
[models.small-int4]
quantize = "4"

[models.small-bf16]
quantize = "none"
dtype = "bfloat16"

[models.remote]
base_url = "{url}/v1"
model = "anything"
""",
        )
        env = {key: value for key, value in os.environ.items() if key not in ("MODEL_PATH", "OPENAI_BASE_URL")}
        pool = ModelPool(Settings.from_env({**env, "MODELS_FILE": path, "MAX_LOADED_MODELS": "1", "DEVICE": "cpu"}))
        try:
            int4 = pool.get("small-int4")
            assert isinstance(int4, LocalClient) and (int4.info.weights, int4.info.name) == ("int4", MODEL_NAME)
            int4_answer = int4.chat(question, **greedy)
            assert int4_answer == embedded_client.chat(question, **greedy)  # the same model and weights
            story = int4.stream(
                [Message.user("Write a long story about a dragon.")], temperature=0.0, max_new_tokens=256
            )
            assert isinstance(next(event for event in story if isinstance(event, TextDelta)), TextDelta)

            bf16 = pool.get("small-bf16")
            assert isinstance(bf16, LocalClient) and (bf16.info.weights, bf16.info.dtype) == ("", "bfloat16")
            assert pool.loaded() == ["small-bf16"]  # int4 was unloaded to make room
            assert int4.engine.decoder is None  # type: ignore[attr-defined]  # its weights are gone
            ended = list(story)  # the reply that was streaming when its model was unloaded ends, in words
            done = ended[-1]
            assert isinstance(done, Done)
            assert (done.finish_reason, done.error) == ("error", "RuntimeError: The engine has shut down.")
            assert done.usage.completion_tokens < 256
            assert "Paris" in bf16.chat(question, **greedy)
            with pytest.raises(RuntimeError, match="The engine has shut down"):
                int4.chat(question, **greedy)  # whoever still holds the unloaded client hears so

            remote = pool.get("remote")
            assert isinstance(remote, OpenAIClient)
            assert remote.chat(question, **greedy) == int4_answer  # the server's model is the int4 one
            assert pool.loaded() == ["small-bf16", "remote"]
        finally:
            pool.close()
