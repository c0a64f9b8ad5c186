"""Showing a conversation: the history, and a turn as its events arrive.

Every text that came from a model, a tool, a file or an import is drawn through
ui.render (safe_markdown for bodies, safe_label for expander and status titles): Markdown
and $LaTeX$ render, HTML shows as text, and remote images and links are shown as text,
so nothing in a reply makes the browser fetch a URL. Images the code produced are
checked (store.images.image_problem) before st.image decodes them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import streamlit as st

from glm_client import Done, Message, Notice, ReasoningDelta, TextDelta, ToolCall, ToolCallProgress, ToolCallStart
from glm_client.agent import AgentEvent, MessageListener, ObservationEvent, RoundLimitReached
from glm_client.messages import IMAGE_PLACEHOLDER
from store import BackgroundDraftWriter, describe_store_failure
from store.images import image_problem
from ui.redraws import Throttled
from ui.render import safe_label, safe_markdown
from ui.state import OpenConversation

CURSOR = "▌"
THINKING_ICON = "💭"
# Material icons: they render the same in every browser (an emoji avatar may fall back to a
# small monochrome glyph where the system has no colour emoji font).
AVATARS = {"user": ":material/person:", "assistant": ":material/smart_toy:"}

# Starts a turn that reports each final message to the listener and stops when the event is set.
StartTurn = Callable[[MessageListener, threading.Event], Generator[AgentEvent, None, None]]


def render_history(
    conversation: list[Message], inspect: Callable[[int], None] | None = None, show_models: bool = False
) -> None:
    """Every message; an assistant reply and the observations of its calls share one bubble.

    `inspect(index)` draws the prompt inspector's control under each reply; with
    `show_models` each reply says which model wrote it.
    """
    bubble, bubble_role = None, None
    for index, message in enumerate(conversation):
        if message.role == "system":
            continue
        role = "user" if message.role == "user" else "assistant"
        if bubble is None or role == "user" or bubble_role != role:
            bubble, bubble_role = st.chat_message(role, avatar=AVATARS[role]), role
        with bubble:
            if message.role == "user":
                st.markdown(safe_markdown(message.content))  # may come from an import
            elif message.role == "assistant":
                render_assistant(message)
                if show_models and message.meta.get("model"):
                    st.caption(safe_markdown(f"`{message.meta['model']}`"))
                if inspect is not None:
                    inspect(index)
            else:
                render_observation(message)
            for notice in message.meta.get("notices", []):
                st.info(safe_markdown(notice), icon="ℹ️")


def render_assistant(message: Message) -> None:
    if message.reasoning:
        with st.expander(thought_label(message.meta.get("thinking_s")), icon=THINKING_ICON):
            st.markdown(safe_markdown(message.reasoning))
    if message.content:
        st.markdown(safe_markdown(message.content))
    for call in message.tool_calls:
        with st.expander(call_title(call), icon="🔧"):
            render_call(call)
    if message.meta.get("error"):
        st.error(safe_markdown(message.meta["error"]))
    elif message.meta.get("interrupted"):
        st.caption("⏹ Stopped before the reply was finished.")
    elif message.meta.get("finish_reason") == "length":
        st.caption(length_caption(still_thinking=bool(message.reasoning and not message.content)))


def thought_label(seconds: Any) -> str:
    """The closed thinking block's title: "Thought for N s"."""
    return f"Thought for {seconds:.0f} s" if isinstance(seconds, int | float) else "Thought"


def length_caption(still_thinking: bool) -> str:
    if still_thinking:  # thinking counts against the same budget: say why no answer came
        return "✂️ The reply ran out of tokens while still thinking; raise Max new tokens."
    return "✂️ The reply reached the max-new-tokens limit."


class LiveText:
    """A slot showing text as it streams, with a cursor: redrawn on a budget, the final text always drawn."""

    def __init__(self, slot: Any) -> None:
        self.slot = slot
        self.show = Throttled(lambda text: slot.markdown(safe_markdown(text) + CURSOR))

    def finish(self, text: str) -> None:
        self.slot.markdown(safe_markdown(text))


class ThinkingBlock:
    """The live "Thinking…" block of one round, closed to "Thought for N s" when the thinking ends."""

    def __init__(self, area: Any) -> None:
        self.area = area  # a container above the reply text, so the block reads before the answer
        self.status: Any = None
        self.box: LiveText | None = None
        self.text = ""
        self.started = 0.0

    def add(self, text: str) -> None:
        if self.status is None:
            self.started = time.monotonic()
            self.status = self.area.status("Thinking…", state="running", expanded=True)
            self.box = LiveText(self.status.empty())
        self.text += text
        if self.box is not None:  # None once closed: more thinking after the answer began is kept, not drawn
            self.box.show(self.text)

    def close(self) -> None:
        if self.status is None or self.box is None:
            return
        self.box.finish(self.text)
        self.status.update(label=thought_label(time.monotonic() - self.started), state="complete", expanded=False)
        self.box = None  # closed once; later events leave it alone


def render_observation(message: Message) -> None:
    duration = message.meta.get("duration_s")
    took = f" · {duration:.2f} s" if isinstance(duration, int | float) else ""
    label = safe_label(f"{'❌' if message.is_error else '📤'} Result of `{message.name or 'call'}`{took}")
    with st.expander(label, expanded=bool(message.images)):
        render_observation_body(message)


def render_observation_body(message: Message) -> None:
    """Text and images in the order the code produced them."""
    parts = message.content.split(IMAGE_PLACEHOLDER)
    images = list(message.images)
    for index, text in enumerate(parts):
        if text.strip():
            st.code(text.strip("\n"), language="text")
        if index < len(parts) - 1 and images:
            show_image(images.pop(0))
    for image in images:  # images the text does not place
        show_image(image)
    if "full_text" in message.meta:
        with st.popover("Full output (the model saw a shortened copy)"):
            st.code(message.meta["full_text"], language="text")


def show_image(data: bytes) -> None:
    """An image the code produced, or a caption saying why it is not shown.

    The header is read first: a huge image would cost seconds and hundreds of MB on every
    redraw, and bytes that are no image would raise on every redraw.
    """
    problem = image_problem(data)
    if problem is None:
        try:
            st.image(data)
            return
        except (OSError, ValueError, SyntaxError) as error:  # a valid header over broken data
            problem = f"it could not be decoded ({type(error).__name__})"
    st.caption(f"🖼️ Image not shown: {problem}.")


def call_title(call: ToolCall) -> str:
    """A call's one-line title, already a safe label (the name and arguments are the model's)."""
    if call.parse_error:
        return safe_label(f"Call {call.name} not run" if call.name else "Call not run")
    if call.is_interpreter:
        return "Code"
    arguments = json.dumps(call.arguments, ensure_ascii=False)
    return safe_label(f"{call.name}({arguments[:80]}{'…' if len(arguments) > 80 else ''})")


def render_call(call: ToolCall) -> None:
    if call.parse_error:
        st.error(safe_markdown(call.parse_error))
        if call.raw:
            st.code(call.raw, language="text")
    elif call.is_interpreter:
        st.code(call.code, language="python")
    else:
        st.json(call.arguments)


class CallProgress:
    """A line under the running call that says how long it has run.

    Passed as a kernel executor's `on_wait`: each redraw is also where Streamlit can
    stop a script, so the Stop button interrupts running code.
    """

    def __init__(self) -> None:
        self._slot: Any = None

    def attach(self, container: Any) -> None:
        self._slot = container.empty()

    def detach(self) -> None:
        if self._slot is not None:
            self._slot.empty()
        self._slot = None

    def __call__(self, elapsed_s: float) -> None:
        if self._slot is not None:
            self._slot.caption(f"⏳ running for {elapsed_s:.0f} s — Stop interrupts it")


def call_writing(status: Any, title: str) -> Throttled:
    """The label of a call being written, "Calling `python`… (120 tokens)", for its ToolCallProgress events.

    Each redraw is also where Streamlit acts on a Stop click or a closed tab: without them
    a turn went on for as long as the model wrote its call (a minute on a busy CPU).
    """
    return Throttled(lambda tokens: status.update(label=f"{title} ({tokens} tokens)"))


def stream_turn(
    events: Iterator[AgentEvent],
    stop_area: Any,
    progress: CallProgress | None = None,
    on_text: Callable[[str], None] | None = None,
    stop_key: str = "stop",
) -> None:
    """Render one agent turn live inside an assistant bubble, with a Stop button in `stop_area`.

    `on_text(reply_so_far)` follows the streamed text (to save drafts). Clicking Stop, like
    any other widget, makes Streamlit end this run at its next redraw and start the next.
    """
    bubble = st.chat_message("assistant", avatar=AVATARS["assistant"])
    st.empty()  # takes the place of the last run's Regenerate/Clear, so none show under a streaming reply
    stop_area.button("⏹ Stop", key=stop_key, help="Stop the reply here; what it wrote so far is kept")
    with bubble:
        thinking = ThinkingBlock(st.container())
        text_box = LiveText(st.empty())
        st.empty()  # takes the place of the old reply's caption, so no stale "Stopped" shows under this one
        text = ""
        status = None
        writing: Throttled | None = None  # the call being written's progress line
        for event in events:
            if isinstance(event, ReasoningDelta):
                thinking.add(event.text)
                continue
            if not isinstance(event, Notice):
                thinking.close()  # the answer (or a call, or the end) has begun
            if isinstance(event, TextDelta):
                text += event.text
                text_box.show(text)
                if on_text is not None:
                    on_text(text)
            elif isinstance(event, ToolCallStart):
                text_box.finish(text)
                title = safe_label(f"Calling `{event.name}`…") if event.name else "Calling a tool…"
                status = st.status(title, state="running")
                writing = call_writing(status, title)
            elif isinstance(event, ToolCallProgress):
                if writing is not None:
                    writing(event.tokens)
            elif isinstance(event, ToolCall):
                text_box.finish(text)
                writing = None
                status = status or st.status("Calling a tool…", state="running")
                status.update(label=safe_label(f"Running {call_title(event)}…"), state="running")
                with status:
                    render_call(event)
                if progress is not None:
                    progress.attach(status)
            elif isinstance(event, ObservationEvent):
                assert status is not None
                if progress is not None:
                    progress.detach()
                state = "error" if event.message.is_error else "complete"
                status.update(
                    label=safe_label(f"{call_title(event.call)} · {event.duration_s:.2f} s"),
                    state=state,
                    expanded=bool(event.message.images),
                )
                with status:
                    render_observation_body(event.message)
                status = None
                text = ""
                thinking = ThinkingBlock(st.container())  # the next round thinks and writes below the call
                text_box = LiveText(st.empty())
            elif isinstance(event, Notice):
                st.info(safe_markdown(event.message), icon="ℹ️")
            elif isinstance(event, RoundLimitReached):
                pass  # the Notice that follows says it
            elif isinstance(event, Done):
                text_box.finish(text)
                if event.finish_reason == "error":
                    st.error(safe_markdown(event.error or "The model failed."))  # may quote a server's reply
                elif event.finish_reason == "length":
                    st.caption(length_caption(still_thinking=bool(thinking.text and not text)))


def answer(
    conversation: OpenConversation,
    start_turn: StartTurn,
    stop_area: Any,
    progress: CallProgress | None = None,
    stop_key: str = "stop",
) -> None:
    """Stream one turn into the page and the store: drafts while text streams, and each
    message once the turn reports it final.

    This run owns the turn. Whatever ends the run early (Stop, another click, a new message,
    switching conversation) ends the turn here, before the next run starts: the model is
    cancelled and the partial reply, with every token received, is saved marked as stopped.
    A store that fails meanwhile (a full disk, a database restarting) is reported, not fatal:
    the reply streams on, and what was not saved is saved once the store works again.
    """
    drafts: list[BackgroundDraftWriter] = []
    failing = [False]  # whether the store failed last time: the user hears of each change once

    def report(failure: str | None) -> None:
        """`failure`: why the last save failed, in words, or None when it worked."""
        if (failure is not None) == failing[0]:
            return
        failing[0] = failure is not None
        if failure is None:
            st.toast("Saving works again.", icon="💾")
        else:
            message = f"Saving failed: {failure}. The reply goes on and is saved once the store works."
            st.toast(message, icon="⚠️", duration="long")

    def save_draft(text: str) -> None:
        if not drafts:
            drafts.append(conversation.draft_writer())
        drafts[0].update(Message.assistant(text))
        error = drafts[0].error  # read once: the writer's thread may clear it meanwhile
        report(None if error is None else describe_store_failure(error))

    def close_drafts() -> None:
        while drafts:
            drafts.pop().close()  # waits for a draft being written: it must not land after the final message

    def save_message(index: int, message: Message) -> None:
        close_drafts()  # the next reply goes to the next position
        report(None if conversation.save_message(index, message) else conversation.save_error)

    cancel = threading.Event()
    events = start_turn(save_message, cancel)
    try:
        stream_turn(events, stop_area, progress, on_text=save_draft, stop_key=stop_key)
    finally:
        cancel.set()
        events.close()  # run_turn appends and reports the partial reply now
        close_drafts()
