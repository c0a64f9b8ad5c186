"""How kernel messages become outputs and observations: pure functions, no kernel needed."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from glm_client.observations import cap_middle
from kernel.collector import OutputCollector
from kernel.files import safe_filename
from kernel.process import INLINE_BACKEND, kernel_env
from kernel.result import IMAGE_PLACEHOLDER, NO_OUTPUT_OBSERVATION, ExecutionResult, Output
from kernel.text import count_repeated_lines, short_traceback, strip_ansi

PNG = b"\x89PNG\r\n\x1a\nfake"


def msg(msg_type: str, **content: Any) -> dict[str, Any]:
    return {"msg_type": msg_type, "content": content}


def collect(*messages: dict[str, Any], **limits: int) -> list[Output]:
    collector = OutputCollector(**limits)
    for message in messages:
        collector.add(message)
    return collector.finish()


def test_streams_merge_per_name_and_keep_order() -> None:
    outputs = collect(
        msg("stream", name="stdout", text="a"),
        msg("stream", name="stdout", text="b\n"),
        msg("stream", name="stderr", text="\x1b[31mred\x1b[0m\n"),
        msg("stream", name="stdout", text="c\n"),
    )
    assert [(o.name, o.text) for o in outputs] == [("stdout", "ab\n"), ("stderr", "red\n"), ("stdout", "c\n")]


def test_rich_outputs_decode_png_keep_text_and_summarise_binary() -> None:
    png = base64.b64encode(PNG).decode()
    pdf = base64.b64encode(b"%PDF" * 3000).decode()
    outputs = collect(
        msg("display_data", data={"image/png": png, "text/plain": "<Figure>"}, metadata={}),
        msg("display_data", data={"application/pdf": pdf, "text/plain": "<PDF object>"}, metadata={}),
        msg("execute_result", data={"text/html": "<b>hi</b>", "text/plain": "<IPython.core.display.HTML object>"}),
        msg("display_data", data={"application/json": {"a": 1}}, metadata={}),
    )
    assert outputs[0].png == PNG
    assert outputs[1].png is None and outputs[1].text == "[application/pdf output, 12000 bytes]"
    assert pdf not in outputs[1].text and "application/pdf" not in outputs[1].mime
    assert outputs[2].kind == "result" and outputs[2].text == "<b>hi</b>"
    assert json.loads(outputs[3].mime["application/json"]) == {"a": 1}
    result = ExecutionResult(outputs=outputs)
    assert result.images == [PNG]
    assert result.to_observation().split("\n") == [
        IMAGE_PLACEHOLDER,
        "[application/pdf output, 12000 bytes]",
        "<b>hi</b>",
        '{"a": 1}',
    ]


def test_clear_output_and_display_updates() -> None:
    outputs = collect(
        msg("stream", name="stdout", text="progress 1\n"),
        msg("clear_output", wait=True),
        msg("stream", name="stdout", text="progress 2\n"),
        msg("display_data", data={"text/plain": "v1"}, metadata={}, transient={"display_id": "d"}),
        msg("update_display_data", data={"text/plain": "v2"}, metadata={}, transient={"display_id": "d"}),
    )
    assert [o.text for o in outputs] == ["progress 2\n", "v2"]


def test_text_beyond_the_budget_is_dropped_and_counted() -> None:
    outputs = collect(
        msg("stream", name="stdout", text="x" * 80),
        msg("stream", name="stderr", text="y" * 50),
        max_text_chars=100,
    )
    assert outputs[0].text == "x" * 80 and outputs[1].text == "y" * 20
    assert "30 more characters were not kept" in outputs[-1].text


def test_images_beyond_the_binary_budget_are_summarised() -> None:
    png = base64.b64encode(PNG * 10).decode()
    outputs = collect(msg("display_data", data={"image/png": png}, metadata={}), max_binary_bytes=50)
    assert outputs[0].png is None and "not kept" in outputs[0].text


def test_error_observation_is_condensed() -> None:
    traceback = [
        "\x1b[31m---------------------------------------------------------------------------\x1b[39m",
        "\x1b[31mValueError\x1b[39m                                Traceback (most recent call last)",
        *[
            f"Cell In[1], line {n}, in f{n}()\n      1 context\n----> {n} f{n + 1}()\n      3 more context\n"
            for n in range(8)
        ],
        "\x1b[31mValueError\x1b[39m: bad",
    ]
    (error,) = collect(msg("error", ename="ValueError", evalue="bad", traceback=traceback))
    assert error.text == "ValueError: bad" and not any("\x1b" in line for line in error.traceback)
    observation = ExecutionResult(outputs=[error], status="error").to_observation()
    assert observation.splitlines() == [
        "... [3 earlier frames omitted] ...",
        *[line for n in range(3, 8) for line in (f"Cell In[1], line {n}, in f{n}()", f"----> {n} f{n + 1}()")],
        "ValueError: bad",
    ]


def test_syntax_error_is_not_repeated() -> None:
    trace = short_traceback(
        ["  Cell In[1], line 1\n    def (\n        ^\nSyntaxError: invalid syntax\n"], 5, "SyntaxError"
    )
    assert trace == "  Cell In[1], line 1\n    def (\n        ^"


def test_a_library_frame_is_named_from_its_package() -> None:
    frames = [
        "File /srv/app/.venv/lib/python3.11/site-packages/matplotlib/axes/_axes.py:5329, in Axes.scatter(self, x)\n"
        "   5328 if x.size != y.size:\n-> 5329     raise ValueError('x and y must be the same size')\n",
        "File /usr/lib/python3.12/json/decoder.py:337, in JSONDecoder.decode(self, s)\n--> 337     obj = f()\n",
        "File /srv/app/lib/python/mine.py:3, in g()\n----> 3 h()\n",  # not a library's layout: kept
    ]
    assert short_traceback(frames, 5).splitlines() == [
        "File matplotlib/axes/_axes.py:5329, in Axes.scatter(self, x)",
        "-> 5329     raise ValueError('x and y must be the same size')",
        "File json/decoder.py:337, in JSONDecoder.decode(self, s)",
        "--> 337     obj = f()",
        "File /srv/app/lib/python/mine.py:3, in g()",
        "----> 3 h()",
    ]


def test_a_line_repeated_three_times_or_more_is_read_once_with_its_count() -> None:
    text = "start\n" + "warn\n" * 12 + "twice\ntwice\n\n\n\nend\nwarn\nwarn\nwarn"
    assert count_repeated_lines(text).split("\n") == [
        "start",
        "warn",
        "... [the line above 11 more times] ...",
        *["twice", "twice", "", "", ""],  # two in a row, and blank lines, stay as they are
        "end",
        "warn",
        "... [the line above 2 more times] ...",
    ]


@pytest.mark.parametrize("max_chars", [50, 1000, 20_000])
def test_cap_middle_keeps_head_and_tail_within_the_limit(max_chars: int) -> None:
    text = "H" * 30_000 + "T" * 30_000
    capped = cap_middle(text, max_chars)
    assert len(capped) <= max_chars
    assert capped.startswith("H") and capped.endswith("T")
    omitted = int(capped.split("... [")[1].split(" characters omitted")[0])
    assert omitted == len(text) - len(capped) + len(capped.split("\n")[1]) + 2
    assert cap_middle("short", 10) == "short"


def test_empty_result_says_so() -> None:
    assert ExecutionResult().to_observation() == NO_OUTPUT_OBSERVATION
    assert ExecutionResult().error is None and ExecutionResult().text == ""


def test_strip_ansi_removes_colour_and_links() -> None:
    assert strip_ansi("\x1b[1;31mred\x1b[0m \x1b]8;;http://x\x07link\x1b]8;;\x07") == "red link"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../x.csv", "x.csv"),
        ("C:\\Users\\me\\data.xlsx", "data.xlsx"),
        ("   ", "upload"),
        ("...", "upload"),
        ("a\x00b.txt", "a_b.txt"),
        ("名字.txt", "名字.txt"),
    ],
)
def test_safe_filename(name: str, expected: str) -> None:
    assert safe_filename(name) == expected


def test_safe_filename_shortens_long_names_but_keeps_the_suffix() -> None:
    name = safe_filename("é" * 300 + ".csv")
    assert name.endswith(".csv") and len(name.encode()) <= 200


def test_kernel_env_drops_secrets_and_sets_inline_plots() -> None:
    env = kernel_env(
        {"PATH": "/bin", "OPENAI_API_KEY": "k", "HF_TOKEN": "t", "AWS_SECRET_ACCESS_KEY": "s", "SSH_AUTH_SOCK": "a"}
    )
    assert env["PATH"] == "/bin" and env["MPLBACKEND"] == INLINE_BACKEND
    assert not {"OPENAI_API_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "SSH_AUTH_SOCK"} & env.keys()
