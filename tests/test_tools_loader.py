"""load_tools_dir: the operator's own tool files, good and broken."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools import default_registry, dispatch_tool, load_tools_dir

GOOD = '''
from typing import Annotated
from tools import register_tool

@register_tool
def _loader_test_greet(name: Annotated[str, "Who to greet", True]) -> str:
    """Greet someone."""
    return f"{GREETING}, {name}!"

GREETING = "Hello"
'''


@pytest.fixture
def cleanup() -> Iterator[None]:
    yield
    for name in ("_loader_test_greet", "_loader_test_other"):
        default_registry.unregister(name)


def test_good_and_broken_files(tmp_path: Path, cleanup: None) -> None:
    (tmp_path / "a_syntax.py").write_text("def broken(:\n    pass\n")
    (tmp_path / "b_import.py").write_text("import no_such_module_for_tools_test\n")
    (tmp_path / "c_raises.py").write_text("x = 1\nraise RuntimeError('boom')\n")
    (tmp_path / "d_good.py").write_text(GOOD)
    (tmp_path / "notes.txt").write_text("not python")

    errors = load_tools_dir(tmp_path)

    messages = {error.file.name: error.message for error in errors}
    assert set(messages) == {"a_syntax.py", "b_import.py", "c_raises.py"}
    assert messages["a_syntax.py"].startswith("SyntaxError:") and "(line 1)" in messages["a_syntax.py"]
    assert messages["b_import.py"].startswith("ModuleNotFoundError: No module named 'no_such_module_for_tools_test'")
    assert messages["c_raises.py"] == "RuntimeError: boom (line 2)"
    assert dispatch_tool("_loader_test_greet", {"name": "Ada"}).text == "Hello, Ada!"


def test_reloading_replaces_instead_of_duplicating(tmp_path: Path, cleanup: None) -> None:
    tool_file = tmp_path / "greet.py"
    tool_file.write_text(GOOD)
    assert load_tools_dir(tmp_path) == []
    count = len(default_registry)

    tool_file.write_text(GOOD.replace('"Hello"', '"Hi"'))
    assert load_tools_dir(tmp_path) == []
    assert len(default_registry) == count
    assert dispatch_tool("_loader_test_greet", {"name": "Ada"}).text == "Hi, Ada!"


def test_tools_dir_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cleanup: None) -> None:
    (tmp_path / "other.py").write_text(GOOD.replace("_loader_test_greet", "_loader_test_other"))
    monkeypatch.setenv("TOOLS_DIR", str(tmp_path))
    assert load_tools_dir() == []
    assert "_loader_test_other" in default_registry

    monkeypatch.delenv("TOOLS_DIR")
    assert load_tools_dir() == []


def test_missing_directory_is_reported(tmp_path: Path) -> None:
    errors = load_tools_dir(tmp_path / "nope")
    assert len(errors) == 1
    assert errors[0].message == "not a directory"
    assert str(errors[0]).endswith("nope: not a directory")


PID_TOOL = '''
import os
from tools import register_tool

@register_tool
def _loader_test_pid() -> dict:
    """Which process runs this, and which version of the file."""
    return {"pid": os.getpid(), "version": VERSION}

VERSION = 1
'''


def test_tools_run_in_a_worker_the_version_that_was_loaded(tmp_path: Path) -> None:
    tool_file = tmp_path / "pid.py"
    tool_file.write_text(PID_TOOL)
    try:
        assert load_tools_dir(tmp_path) == []
        first = dispatch_tool("_loader_test_pid", {}).value
        assert first["pid"] != os.getpid()  # a worker process, which a timeout can kill
        assert first["version"] == 1

        # Edited on disk but not reloaded: the worker still runs what the app loaded.
        tool_file.write_text(PID_TOOL.replace("VERSION = 1", "VERSION = 2"))
        assert dispatch_tool("_loader_test_pid", {}).value["version"] == 1
        assert load_tools_dir(tmp_path) == []
        assert dispatch_tool("_loader_test_pid", {}).value["version"] == 2
    finally:
        default_registry.unregister("_loader_test_pid")
