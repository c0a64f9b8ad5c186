"""The terminal chat, run as a real process through pipes, talking to a live API server.

The server is backed by a scripted model, so what the CLI prints is exact and what
it sent can be checked on the server side.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from glm_client import Done, TextDelta, ToolCall, ToolCallStart
from glm_client.server import create_app, serve_in_thread
from glm_client.testing import ScriptedClient

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # each test starts a Python process that imports torch


class EndlessClient(ScriptedClient):
    """Streams 'tick ' every 20 ms until stopped, then plays scripted replies as usual."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = threading.Event()

    def stream(self, messages, tools=None, *, cancel=None, **params):
        if self.closed.is_set():
            yield from super().stream(messages, tools, cancel=cancel, **params)
            return
        try:
            for _ in range(3000):
                if cancel is not None and cancel.is_set():
                    yield Done("cancelled")
                    return
                time.sleep(0.02)
                yield TextDelta("tick ")
            yield Done("stop")
        finally:
            self.closed.set()


@pytest.fixture
def scripted():
    client = ScriptedClient()
    with serve_in_thread(create_app(client)) as url:
        client.url = url + "/v1"
        yield client


def cli(url: str, *args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "OPENAI_BASE_URL": url, "PYTHONUNBUFFERED": "1"}
    env.pop("MODEL_PATH", None)
    return subprocess.Popen(
        [sys.executable, "-m", "glm_client.cli", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def converse(url: str, lines: list[str], *args: str) -> str:
    process = cli(url, *args)
    out, err = process.communicate("\n".join(lines) + "\n", timeout=120)
    assert process.returncode == 0, err
    return out


def test_a_question_gets_the_streamed_reply_and_clear_starts_over(scripted):
    scripted.queue("Hello from the server!", "A fresh start.")
    out = converse(
        scripted.url,
        ["Hi there", "clear", "Who are you?", "stop", "never sent"],
        "--system",
        "Be terse.",
        "--temperature",
        "0.2",
        "--max-new-tokens",
        "50",
    )
    assert out.startswith("Chatting with scripted. 'clear' starts a new conversation, 'stop' quits")
    assert "You: Assistant: Hello from the server!\n" in out
    assert "You: (new conversation)\n" in out
    assert "You: Assistant: A fresh start.\n" in out
    first, second = scripted.requests  # "never sent" came after stop
    assert [(m.role, m.content) for m in first[0]] == [("system", "Be terse."), ("user", "Hi there")]
    assert [(m.role, m.content) for m in second[0]] == [("system", "Be terse."), ("user", "Who are you?")]
    assert second[2] == {"temperature": 0.2, "max_new_tokens": 50}


def test_slash_prompt_prints_the_last_rounds_request_without_the_key(scripted, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-cli-secret")
    scripted.queue("Hello!")
    out = converse(scripted.url, ["/prompt", "Hi there", "/prompt"], "--system", "Be terse.", "--max-new-tokens", "50")
    assert "You: (no reply yet: the prompt is shown after the model has answered)\n" in out
    shown = out.split("--- prompt of the last round (tokens counted by the server) ---\n")[1]
    request = json.loads(shown.split("\n--- end of prompt ---")[0])
    assert "sk-cli-secret" not in out and request["headers"] == {"Authorization": "Bearer ***"}
    assert request["body"]["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi there"},
    ]
    assert request["body"]["max_tokens"] == 50


def test_tool_mode_runs_the_call_and_shows_it(scripted):
    scripted.queue(
        [TextDelta("Let me compute. "), ToolCallStart("calculator"), ToolCall("calculator", {"expression": "6*7"})],
        "It is 42.",
    )
    out = converse(scripted.url, ["What is 6*7?"], "--tools")
    assert "Assistant: Let me compute. \n  [calling calculator…]\n  → calculator(" in out
    assert '  → calculator({"expression": "6*7"})\n  ← 42\nAssistant: It is 42.\n' in out
    messages, tools, _ = scripted.requests[1]
    assert "calculator" in [tool["function"]["name"] for tool in tools]
    assert (messages[-1].role, messages[-1].content, messages[-1].name) == ("observation", "42", "calculator")


def test_ctrl_c_stops_the_reply_not_the_program():
    client = EndlessClient()
    client.queue("Still here.")
    with serve_in_thread(create_app(client)) as url:
        process = cli(url + "/v1")
        process.stdin.write("Count forever\n")
        process.stdin.flush()
        seen = ""
        while "tick tick" not in seen:
            seen += process.stdout.read(1)
        process.send_signal(signal.SIGINT)
        assert client.closed.wait(10), "the server kept generating after Ctrl-C"
        out, err = process.communicate("Are you there?\nstop\n", timeout=60)
    assert process.returncode == 0, err
    assert "[stopped]\n" in seen + out and "You: Assistant: Still here.\n" in out
    second = client.requests[-1][0]
    assert second[-2].role == "assistant" and second[-2].content.startswith("tick tick")  # the partial reply was kept


def test_a_bad_setting_is_one_sentence_and_exit_code_1(scripted, monkeypatch):
    monkeypatch.setenv("DEVICE", "quantum")
    process = cli(scripted.url)
    out, err = process.communicate("", timeout=60)
    assert process.returncode == 1 and out == ""
    assert err.strip() == "The model could not be loaded. DEVICE='quantum' is not valid; use one of: auto, cpu, cuda."


@pytest.mark.kernel
def test_interpreter_mode_runs_code_in_a_kernel(scripted):
    scripted.queue([ToolCall("interpreter", {"code": "print(6 * 7)"})], "The answer is 42.")
    out = converse(scripted.url, ["Compute 6*7 in Python"], "--interpreter")
    assert "  → run code:\n    print(6 * 7)\n  ← 42\nAssistant: The answer is 42.\n" in out
    messages, tools, _ = scripted.requests[1]
    assert [tool["function"]["name"] for tool in tools] == ["interpreter"]
    assert messages[0].content.startswith("You are a helpful assistant with a Python interpreter")
    assert (messages[-1].role, messages[-1].content.strip()) == ("observation", "42")
