"""Thinking models: the `<think>` splitter, replay through chat templates, the local client, the agent, the store.

The templates here are written for these tests: one that opens the think block in its
generation prompt (as the GLM-Z1 and DeepSeek-R1 distills do), one that takes the
`enable_thinking` switch and keeps the last reply's `reasoning_content` (as Qwen3's does).
"""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from glm_client.agent import run_turn
from glm_client.client import LocalClient
from glm_client.dialects.chat_template import ChatTemplateDialect
from glm_client.dialects.json_calls import JsonCallParser
from glm_client.dialects.reasoning import (
    ReasoningSplitter,
    prompt_opens_thought,
    template_takes_thinking_switch,
)
from glm_client.engines.base import EngineInfo
from glm_client.events import Done, Event, ReasoningDelta, TextDelta, ToolCallStart
from glm_client.messages import Message, ToolCall
from glm_client.testing import ScriptedClient
from store import Conversation, from_openai_json, open_store, to_markdown, to_openai_json

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

# Opens the think block in the prompt: the reply starts inside it.
OPENING_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n<think>\n{% endif %}"
)
# Takes enable_thinking (off: an empty closed block in the prompt) and shows the last reply's thinking.
SWITCH_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>\n"
    "{% if m.role == 'assistant' and m.reasoning_content and loop.last %}"
    "<think>\n{{ m.reasoning_content }}\n</think>\n\n{% endif %}"
    "{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)
PLAIN_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


# --- the splitter -----------------------------------------------------------------------------
def split(chunks: str | list[str], inside: bool = False, tools: list | None = None) -> list[Event]:
    splitter = ReasoningSplitter(JsonCallParser(tools), inside=inside)
    events: list[Event] = []
    for chunk in [chunks] if isinstance(chunks, str) else chunks:
        events += splitter.feed(chunk)
    return events + splitter.finish()


def merged(events: list[Event]) -> list[tuple[str, object]]:
    """Adjacent deltas of one kind joined: chunking may split them differently."""
    out: list[tuple[str, object]] = []
    for event in events:
        kind = type(event).__name__
        if isinstance(event, TextDelta | ReasoningDelta) and out and out[-1][0] == kind:
            out[-1] = (kind, str(out[-1][1]) + event.text)
        elif isinstance(event, TextDelta | ReasoningDelta):
            out.append((kind, event.text))
        elif isinstance(event, ToolCall):
            out.append((kind, (event.name, event.arguments, event.parse_error)))
        else:
            out.append((kind, getattr(event, "name", None)))
    return out


def reasoning_of(events: list[Event]) -> str:
    return "".join(event.text for event in events if isinstance(event, ReasoningDelta))


def text_of(events: list[Event]) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def test_a_think_block_the_reply_opens_is_reasoning_and_the_rest_the_answer() -> None:
    events = split("<think>\nTwo and two.\nThat is four.\n</think>\n\nThe answer is 4.")
    assert merged(events) == [
        ("ReasoningDelta", "Two and two.\nThat is four."),
        ("TextDelta", "The answer is 4."),
    ]


def test_a_reply_that_starts_inside_a_block_the_prompt_opened() -> None:
    events = split("Two and two.\n</think>\n\nFour.", inside=True)
    assert merged(events) == [("ReasoningDelta", "Two and two."), ("TextDelta", "Four.")]
    # Without knowing the prompt opened it, the same text is all answer.
    assert reasoning_of(split("Two and two.\n</think>\n\nFour.")) == ""


def test_the_model_writing_think_again_after_the_prompt_opened_it_is_not_thinking_text() -> None:
    assert merged(split("<think>\nHmm.</think>Yes.", inside=True)) == [
        ("ReasoningDelta", "Hmm."),
        ("TextDelta", "Yes."),
    ]


@pytest.mark.parametrize("inside", [False, True])
def test_a_reply_cut_off_mid_thought_keeps_the_thinking_and_has_no_answer(inside: bool) -> None:
    reply = ("" if inside else "<think>") + "First, the weather in Paris. Then </thi"
    events = split(reply, inside=inside)
    assert reasoning_of(events) == "First, the weather in Paris. Then </thi"
    assert text_of(events) == ""


def test_an_empty_think_block_gives_no_reasoning() -> None:
    assert merged(split("<think>\n\n</think>\n\nHello.")) == [("TextDelta", "Hello.")]


@pytest.mark.parametrize(
    "reply",
    [
        "Use <think> tags like <think>this</think> to think.",
        "  Hello, <think>not a thought</think>",
        "<thinking is not a tag",
        "<",
        "   ",
        "<thin",
    ],
)
def test_text_that_is_no_leading_think_block_passes_through_exactly(reply: str) -> None:
    events = split(reply)
    assert reasoning_of(events) == "" and text_of(events) == reply


def test_a_call_written_while_thinking_is_not_a_call_but_one_after_it_is() -> None:
    call = '<tool_call>{"name": "get_weather", "arguments": {"city": "%s"}}</tool_call>'
    events = split(f"<think>Maybe {call % 'Rome'}? No.</think>\n{call % 'Paris'}", tools=[WEATHER])
    calls = [event for event in events if isinstance(event, ToolCall)]
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert [event.name for event in events if isinstance(event, ToolCallStart)] == ["get_weather"]
    assert "Rome" in reasoning_of(events)


PIECES = st.sampled_from(
    ["<think>", "</think>", "<", "</", "think", ">", "\n", " ", "a", "Hi.", "<thi", "nk>", "</th", "é"]
)


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(PIECES, max_size=14),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=8),
    inside=st.booleans(),
)
def test_any_chunking_gives_the_same_events_as_one_feed(pieces: list[str], cuts: list[int], inside: bool) -> None:
    text = "".join(pieces)
    bounds = sorted({min(cut, len(text)) for cut in cuts} | {0, len(text)})
    chunks = [text[start:end] for start, end in itertools.pairwise(bounds)]
    whole = merged(split(text, inside=inside))
    assert merged(split(chunks, inside=inside)) == whole
    assert merged(split(list(text), inside=inside)) == whole  # one character at a time


def test_prompt_opens_thought_reads_the_end_of_the_prompt() -> None:
    assert prompt_opens_thought("<|assistant|>\n<think>\n")
    assert not prompt_opens_thought("<|assistant|>\n<think>\n\n</think>\n\n")
    assert not prompt_opens_thought("<|user|>\nWhat is <think>?\n<|assistant|>\n")


def test_the_switch_is_found_in_the_template_source() -> None:
    assert template_takes_thinking_switch(SWITCH_TEMPLATE)
    assert template_takes_thinking_switch({"default": PLAIN_TEMPLATE, "thinking": SWITCH_TEMPLATE})
    assert not template_takes_thinking_switch(OPENING_TEMPLATE)
    assert not template_takes_thinking_switch(None)


# --- a tokenizer and an engine for templates written here -------------------------------------
def tokenizer_with(template: str) -> PreTrainedTokenizerFast:
    """Byte-level, one token per byte, plus <think> and </think> as single tokens (as thinking models have)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={char: index for index, char in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    tokenizer.add_special_tokens({"eos_token": "<|end|>"})
    tokenizer.add_tokens(["<think>", "</think>"])
    tokenizer.chat_template = template
    return tokenizer


class ReplayEngine:
    """Yields the ids of a set reply, one at a time, up to max_new_tokens; keeps each prompt."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast, reply: str) -> None:
        self.tokenizer = tokenizer
        self.tokenizer_lock = threading.Lock()
        self.info = EngineInfo("replay", "cpu", "none", 4096, "test")
        self.reply = reply
        self.prompts: list[list[int]] = []

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def generate(self, input_ids, params, stop_ids, cancel=None, constraint=None):
        self.prompts.append(list(input_ids))
        yield from self.tokenizer.encode(self.reply, add_special_tokens=False)[: params.max_new_tokens]


def local_client(template: str, reply: str) -> tuple[LocalClient, ReplayEngine]:
    tokenizer = tokenizer_with(template)
    engine = ReplayEngine(tokenizer, reply)
    return LocalClient(engine, ChatTemplateDialect(tokenizer)), engine  # type: ignore[arg-type]


def prompt_text(engine: ReplayEngine, index: int = -1) -> str:
    return engine.tokenizer.decode(engine.prompts[index])


def test_replay_passes_reasoning_content_and_the_template_decides() -> None:
    dialect = ChatTemplateDialect(tokenizer_with(SWITCH_TEMPLATE))
    old = Message.assistant("Hi!")
    old.reasoning = "An old thought."
    last = Message.assistant("Four.")
    last.reasoning = "Two and two."
    ids = dialect.encode([Message.user("Hello"), old, Message.user("2+2?"), last, Message.user("Thanks")])
    prompt = dialect.tokenizer.decode(ids)
    assert "<think>\nTwo and two.\n</think>\n\nFour." not in prompt  # not the last message: the template drops it
    ids = dialect.encode([Message.user("Hello"), old, Message.user("2+2?"), last])
    prompt = dialect.tokenizer.decode(ids)
    assert "<|assistant|>\n<think>\nTwo and two.\n</think>\n\nFour.\n" in prompt
    assert "An old thought." not in prompt


def test_enable_thinking_reaches_a_template_that_takes_it() -> None:
    dialect = ChatTemplateDialect(tokenizer_with(SWITCH_TEMPLATE))
    messages = [Message.user("Hi")]
    decode = dialect.tokenizer.decode
    assert decode(dialect.encode(messages, enable_thinking=False)).endswith("<|assistant|>\n<think>\n\n</think>\n\n")
    assert decode(dialect.encode(messages, enable_thinking=True)).endswith("<|assistant|>\n")
    assert dialect.encode(messages) == dialect.encode(messages, enable_thinking=True)


def test_a_template_without_the_switch_renders_the_same_either_way() -> None:
    dialect = ChatTemplateDialect(tokenizer_with(PLAIN_TEMPLATE))
    messages = [Message.user("Hi")]
    assert dialect.encode(messages, enable_thinking=False) == dialect.encode(messages)


def test_the_local_client_splits_a_reply_that_starts_inside_the_prompts_block() -> None:
    client, _engine = local_client(OPENING_TEMPLATE, "The user greets me.\n</think>\n\nHello!")
    events = list(client.stream([Message.user("Hi")], max_new_tokens=200))
    assert merged(events[:-1]) == [("ReasoningDelta", "The user greets me."), ("TextDelta", "Hello!")]
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "stop"
    assert not client.info.thinking_switch


def test_the_local_client_offers_the_switch_and_passes_it_to_the_template() -> None:
    client, engine = local_client(SWITCH_TEMPLATE, "<think>\nShort.\n</think>\n\nHello!")
    assert client.info.thinking_switch
    events = list(client.stream([Message.user("Hi")], enable_thinking=True))
    assert merged(events[:-1]) == [("ReasoningDelta", "Short."), ("TextDelta", "Hello!")]
    list(client.stream([Message.user("Hi")], enable_thinking=False))
    assert prompt_text(engine, 0).endswith("<|assistant|>\n")
    assert prompt_text(engine, 1).endswith("<|assistant|>\n<think>\n\n</think>\n\n")


def test_thinking_counts_against_max_new_tokens_and_a_cut_reply_keeps_it() -> None:
    thought = "Let me think about the weather in Paris for a long while."
    client, _ = local_client(OPENING_TEMPLATE, thought + "\n</think>\n\nIt is sunny.")
    conversation = [Message.user("Weather?")]
    list(run_turn(client, conversation, max_new_tokens=20))
    reply = conversation[-1]
    assert reply.meta["finish_reason"] == "length" and reply.meta["completion_tokens"] == 20
    assert reply.content == "" and reply.reasoning == thought[:20].rstrip()


# --- agent, messages and store ----------------------------------------------------------------
def test_the_agent_keeps_the_thinking_apart_from_the_reply() -> None:
    scripted = ScriptedClient([[ReasoningDelta("Greeting. "), ReasoningDelta("Be brief."), TextDelta("Hi!")]])
    conversation = [Message.user("Hello")]
    events = list(run_turn(scripted, conversation))
    assert [type(event).__name__ for event in events] == ["ReasoningDelta", "ReasoningDelta", "TextDelta", "Done"]
    reply = conversation[-1]
    assert (reply.content, reply.reasoning) == ("Hi!", "Greeting. Be brief.")
    assert isinstance(reply.meta["thinking_s"], float)


def test_a_reply_stopped_mid_thought_keeps_its_thinking() -> None:
    scripted = ScriptedClient([[ReasoningDelta("Step one."), ReasoningDelta("Step two."), TextDelta("Done")]])
    conversation = [Message.user("Go")]
    saved: list[Message] = []
    turn = run_turn(scripted, conversation, on_message=lambda _index, message: saved.append(message))
    assert isinstance(next(turn), ReasoningDelta)
    turn.close()  # the page's Stop
    assert saved and saved[-1].reasoning == "Step one." and saved[-1].meta["interrupted"]
    assert saved[-1].content == ""


def test_reasoning_is_saved_and_an_old_message_without_it_reads_as_none() -> None:
    reply = Message.assistant("Hi!")
    reply.reasoning = "Be friendly."
    assert Message.from_dict(reply.to_dict()).reasoning == "Be friendly."
    old = reply.to_dict()
    del old["reasoning"]
    assert Message.from_dict(old).reasoning == ""
    assert Message.from_openai({"role": "assistant", "content": "x", "reasoning": "r"}).reasoning == "r"
    assert Message.from_openai({"role": "assistant", "content": "x", "reasoning_content": "rc"}).reasoning == "rc"
    assert "reasoning_content" not in Message.assistant("no thought").to_openai()


def thinking_conversation() -> Conversation:
    reply = Message.assistant("It is 4.")
    reply.reasoning = "Two and two.\n\nThat makes four."
    return Conversation("id", "chat", "Sums", [Message.user("2+2?"), reply])


def test_exports_carry_the_thinking_and_import_reads_it_back(tmp_path: Path) -> None:
    original = thinking_conversation()
    markdown = to_markdown(original)
    assert "**Thinking**\n\n> Two and two.\n>\n> That makes four.\n\nIt is 4." in markdown
    exported = to_openai_json(original)
    assert json.loads(exported)["messages"][1]["reasoning_content"] == "Two and two.\n\nThat makes four."
    _title, _mode, messages = from_openai_json(exported)
    assert [(m.content, m.reasoning) for m in messages] == [(m.content, m.reasoning) for m in original.messages]
    store = open_store(None, tmp_path)
    try:
        loaded = store.load(store.create_from("chat", messages, "Sums"))
    finally:
        store.close()
    assert loaded is not None and loaded.messages[1].reasoning == "Two and two.\n\nThat makes four."
