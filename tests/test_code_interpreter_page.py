"""The Code Interpreter page in AppTest: a scripted model's code runs in a real kernel."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import kernel
import sandbox.policy
import ui.model
from glm_client import INTERPRETER, ToolCall
from glm_client.observations import observation_chars
from glm_client.testing import ScriptedClient

PAGE = str(Path(__file__).resolve().parent.parent / "modes" / "code_interpreter.py")
PLOT = "import matplotlib.pyplot as plt\nprint('before')\nplt.plot([1, 4, 9])\nplt.show()\nprint('after')"

pytestmark = pytest.mark.kernel


@pytest.fixture
def page(monkeypatch, tmp_path):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    ui.model.settings.clear()
    client = ScriptedClient()
    monkeypatch.setattr(ui.model, "get_client", lambda _name=None: client)
    app = AppTest.from_file(PAGE, default_timeout=120)
    app.run()
    yield app, client
    kernel.shutdown_all()
    ui.model.settings.clear()


def test_model_code_runs_and_plots_show_inline_in_order(page):
    app, client = page
    client.queue([ToolCall(INTERPRETER, {"code": PLOT})], "The plot shows squares.")
    app.chat_input(key="code_interpreter_input").set_value("Plot some squares").run()
    assert not app.exception
    observation = client.requests[1][0][-1]
    assert observation.role == "observation" and observation.name == "interpreter"
    assert observation.content == "before\n[Image]\nafter\n"  # ipykernel flushes stdout before a figure
    assert len(observation.images) == 1 and observation.images[0].startswith(b"\x89PNG")
    assert len(app.get("image")) == 1
    assert "The plot shows squares." in [md.value for md in app.chat_message[-1].markdown]
    offered = client.requests[0][1]
    assert [tool["function"]["name"] for tool in offered] == ["interpreter"]
    assert "no internet access" in client.requests[0][0][0].content


def test_an_error_in_the_code_goes_back_to_the_model(page):
    app, client = page
    client.queue([ToolCall(INTERPRETER, {"code": "1/0"})], "Division by zero is undefined.")
    app.chat_input(key="code_interpreter_input").set_value("Divide by zero").run()
    observation = client.requests[1][0][-1]
    assert observation.is_error and "ZeroDivisionError" in observation.content


def test_the_model_reads_as_much_of_a_result_as_its_context_holds(page):
    app, client = page
    client.queue([ToolCall(INTERPRETER, {"code": "print(list(range(5000)))"})], "Those are the numbers.")
    app.chat_input(key="code_interpreter_input").set_value("Print the numbers below 5000").run()
    observation = client.requests[1][0][-1]
    assert len(observation.content) <= observation_chars(client.info.context_length) == 1024
    assert observation.content.startswith("[0, 1, 2") and observation.content.endswith("4998, 4999]\n")
    assert observation.meta["full_text"] == str(list(range(5000))) + "\n"  # the user's copy is whole


def test_files_written_by_code_get_download_buttons(page):
    app, client = page
    client.queue([ToolCall(INTERPRETER, {"code": "open('report.csv', 'w').write('a,b\\n1,2\\n')"})], "Saved.")
    app.chat_input(key="code_interpreter_input").set_value("Write a csv").run()
    app.run()
    assert any(button.label == "⬇️ report.csv" for button in app.get("download_button"))


def test_the_sidebar_says_the_code_is_sandboxed_and_where_files_are(page):
    app, _ = page
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    assert any("Sandboxed (bubblewrap)" in caption.value for caption in app.sidebar.caption)
    assert "Files are in /mnt/data" in app.sidebar.text_area(key="code_interpreter_system_prompt").value
    assert not app.warning and not app.error


def test_unsandboxed_code_is_announced(monkeypatch, page):
    monkeypatch.setenv("KERNEL_SANDBOX", "none")
    app, _ = page
    kernel.shutdown_all()  # the next run starts a kernel under the new setting
    app.run()
    assert [warning.value for warning in app.warning] == [
        "KERNEL_SANDBOX=none: code runs unconfined, with the app's rights."
    ]
    assert any("Not sandboxed" in caption.value for caption in app.sidebar.caption)


def test_a_shared_app_without_a_sandbox_refuses_the_code(monkeypatch, page, tmp_path):
    monkeypatch.setenv("APP_PASSWORD", "team")
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    sandbox.policy.bwrap_problem.cache_clear()
    app, client = page
    kernel.shutdown_all()
    try:
        client.queue([ToolCall(INTERPRETER, {"code": "open('ran.txt', 'w').write('1')"})], "It did not run.")
        app.chat_input(key="code_interpreter_input").set_value("Write a file").run()
    finally:
        sandbox.policy.bwrap_problem.cache_clear()
    assert "APP_PASSWORD is set" in app.error[0].value
    observation = client.requests[1][0][-1]
    assert observation.is_error and observation.content.startswith("KernelUnavailable: Code is not run")
    assert not list(tmp_path.rglob("ran.txt"))


def test_same_named_files_in_two_folders_get_a_button_each(page):
    app, client = page
    code = "import os\nfor d in ('a', 'b'):\n    os.makedirs(d, exist_ok=True)\n    open(f'{d}/x.txt', 'w').write(d)"
    client.queue([ToolCall(INTERPRETER, {"code": code})], "Written.")
    app.chat_input(key="code_interpreter_input").set_value("Write two files").run()
    app.run()
    assert not app.exception
    labels = sorted(button.label for button in app.get("download_button") if "x.txt" in button.label)
    assert labels == ["⬇️ a/x.txt", "⬇️ b/x.txt"]


def test_each_conversation_has_its_own_kernel_and_keeps_its_files(page, tmp_path):
    app, client = page
    code = "x = 41\nopen('notes.txt', 'w').write('kept')"
    client.queue([ToolCall(INTERPRETER, {"code": code})], "Set.")
    app.chat_input(key="code_interpreter_input").set_value("Set x").run()
    first_id = app.query_params["c"]
    assert (tmp_path / "workspaces" / first_id / "notes.txt").read_text() == "kept"

    app.sidebar.button(key="code_interpreter_new").click().run()
    client.queue([ToolCall(INTERPRETER, {"code": "print(x)"})], "No x here.")
    app.chat_input(key="code_interpreter_input").set_value("Print x").run()
    observation = client.requests[-1][0][-1]
    assert observation.is_error and "NameError: name 'x' is not defined" in observation.content
    assert not any("notes.txt" in button.label for button in app.get("download_button"))

    app.sidebar.button(key=f"code_interpreter_open_{first_id}").click().run()
    assert [info.value for info in app.info] == [
        "This conversation's earlier kernel is gone (restarted, idle too long, or the page was reloaded): "
        "variables from earlier code were lost; files in the working directory were kept."
    ]
    assert any(button.label == "⬇️ notes.txt" for button in app.get("download_button"))


def test_deleting_a_conversation_removes_its_files(page, tmp_path):
    app, client = page
    client.queue([ToolCall(INTERPRETER, {"code": "open('data.txt', 'w').write('1')"})], "Saved.")
    app.chat_input(key="code_interpreter_input").set_value("Write a file").run()
    workdir = tmp_path / "workspaces" / app.query_params["c"]
    assert (workdir / "data.txt").exists()
    app.sidebar.button(key="code_interpreter_delete").click().run()
    assert not workdir.exists()


def test_an_invented_tool_with_a_code_argument_runs_as_code(page):
    """Issue 14: a small model calls `sum_of_integers`, `fibonacci`, … each with a code argument;
    that code runs, with a notice, instead of a refusal that wastes the round."""
    app, client = page
    client.queue([ToolCall("sum_of_integers", {"code": "print(sum(range(1, 101)))"})], "The sum is 5050.")
    app.chat_input(key="code_interpreter_input").set_value("Add the numbers from 1 to 100").run()
    observation = client.requests[1][0][-1]
    assert (observation.content, observation.name, observation.is_error) == ("5050\n", "sum_of_integers", False)
    assert "`sum_of_integers` is not a tool here: its `code` argument ran as Python." in [i.value for i in app.info]
