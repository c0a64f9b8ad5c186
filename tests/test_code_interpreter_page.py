"""The Code Interpreter page in AppTest: a scripted model's code runs in a real kernel."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import kernel
import ui.model
from glm_client import INTERPRETER, ToolCall
from glm_client.testing import ScriptedClient

PAGE = str(Path(__file__).resolve().parent.parent / "modes" / "code_interpreter.py")
PLOT = "import matplotlib.pyplot as plt\nprint('before')\nplt.plot([1, 4, 9])\nplt.show()\nprint('after')"

pytestmark = pytest.mark.kernel


@pytest.fixture
def page(monkeypatch, tmp_path):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    ui.model.settings.clear()
    client = ScriptedClient()
    monkeypatch.setattr(ui.model, "get_client", lambda: client)
    app = AppTest.from_file(PAGE, default_timeout=120)
    app.run()
    yield app, client
    kernel.shutdown_all()
    ui.model.settings.clear()


def test_model_code_runs_and_plots_show_inline_in_order(page):
    app, client = page
    client.queue([ToolCall(INTERPRETER, {"code": PLOT})], "The plot shows squares.")
    app.chat_input(key="ci_input").set_value("Plot some squares").run()
    assert not app.exception
    observation = client.requests[1][0][-1]
    assert observation.role == "observation" and observation.name == "interpreter"
    assert observation.content == "before\n[Image]\nafter\n" or observation.content.split() == [
        "before",
        "[Image]",
        "after",
    ]
    assert len(observation.images) == 1 and observation.images[0].startswith(b"\x89PNG")
    assert len(app.get("image")) == 1
    assert "The plot shows squares." in [md.value for md in app.chat_message[-1].markdown]
    offered = client.requests[0][1]
    assert [tool["function"]["name"] for tool in offered] == ["interpreter"]
    assert "no internet access" in client.requests[0][0][0].content


def test_an_error_in_the_code_goes_back_to_the_model(page):
    app, client = page
    client.queue([ToolCall(INTERPRETER, {"code": "1/0"})], "Division by zero is undefined.")
    app.chat_input(key="ci_input").set_value("Divide by zero").run()
    observation = client.requests[1][0][-1]
    assert observation.is_error and "ZeroDivisionError" in observation.content


def test_files_written_by_code_get_download_buttons(page):
    app, client = page
    client.queue([ToolCall(INTERPRETER, {"code": "open('report.csv', 'w').write('a,b\\n1,2\\n')"})], "Saved.")
    app.chat_input(key="ci_input").set_value("Write a csv").run()
    app.run()
    assert any(button.label == "⬇️ report.csv" for button in app.get("download_button"))
