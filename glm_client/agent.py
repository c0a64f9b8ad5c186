"""The turn loop shared by Chat, Tool and Code Interpreter modes, the CLI and tests.

generate → parse calls → execute each → append observations → generate again,
until the model answers without a call. The turn always ends in words: after
`max_rounds` rounds of calls, or when the model repeats a call it already has the
answer to (its result, or why it was not run), one last round runs with no tools offered. The
conversation list is extended in place as each message completes, so whatever
happens (stop, error, round limit) the text written so far is kept. Each message is
final when it is appended and never changed after: `on_message(index, message)` hears
of each one then, which is how the app saves a turn (the partial reply of a stopped
turn included: it is appended when the caller closes the turn's generator).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from glm_client.client import Client, PromptView
from glm_client.config import DEFAULT_MAX_ROUNDS
from glm_client.dialects.base import ToolSchema, function_of
from glm_client.events import Done, Event, Notice, ReasoningDelta, TextDelta
from glm_client.messages import Message, ToolCall
from glm_client.observations import fit_observation, observation_chars

Executor = Callable[[ToolCall], Message]
MessageListener = Callable[[int, Message], None]


@dataclass
class ObservationEvent:
    """A call has been executed; `message` is the observation appended to the conversation."""

    call: ToolCall
    message: Message
    duration_s: float


@dataclass
class RoundLimitReached:
    rounds: int


AgentEvent = Event | ObservationEvent | RoundLimitReached


def run_turn(
    client: Client,
    conversation: list[Message],
    executor: Executor | None = None,
    tools: list[ToolSchema] | None = None,
    *,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    cancel: threading.Event | None = None,
    force_tool: str | None = None,
    on_message: MessageListener | None = None,
    model_name: str = "",
    **params: Any,
) -> Generator[AgentEvent, None, None]:
    """Answer the conversation, running tool calls through `executor`.

    Without an executor the turn ends at the first call, leaving it for the caller
    to answer with an observation and call `run_turn` again (the Tool page's manual mode).
    `force_tool` ("any" or a tool name) constrains the first round only, so the model
    can answer in words once it has the result. Notices (trimmed history, the round
    limit) are kept in the message's `meta["notices"]` so a redraw shows them again;
    an observation keeps how long its call ran in `meta["duration_s"]`, and the model reads
    as much of it as its context holds (observations.py; the whole text stays in
    `meta["full_text"]`). A thinking model's thoughts go to the reply's `reasoning` (a
    stopped reply's too), the time it thought to `meta["thinking_s"]`.

    Each reply also keeps what the prompt inspector needs to show its round again:
    `meta["model"]` (`model_name`, or the client's), `meta["params"]` and
    `meta["tools"]` (the names offered) to re-render the prompt, and `meta["raw_output"]`,
    what the model wrote before parsing.
    """

    def add(message: Message) -> None:
        conversation.append(message)
        if on_message is not None:
            on_message(len(conversation) - 1, message)

    results: dict[str, Message] = {}  # each call answered in this turn, by call_key
    max_chars = observation_chars(client.info.context_length)
    words_only = False  # the round limit was reached or a call repeated: the last round offers no tools
    for round_index in range(max_rounds + 1):
        text: list[str] = []
        thought: list[str] = []
        thinking = ThinkingClock()
        calls: list[ToolCall] = []
        notices: list[str] = []
        done: Done | None = None
        if round_index == max_rounds:
            words_only = True
            notices.append(round_limit_notice(max_rounds))
            yield RoundLimitReached(max_rounds)
            yield Notice(notices[-1])
        offered = None if words_only else tools
        forced = {"force_tool": force_tool} if force_tool and round_index == 0 else {}
        try:
            for event in client.stream(conversation, offered, cancel=cancel, **params, **forced):
                thinking.note(event)
                if isinstance(event, TextDelta):
                    text.append(event.text)
                elif isinstance(event, ReasoningDelta):
                    thought.append(event.text)
                elif isinstance(event, ToolCall):
                    calls.append(event)
                elif isinstance(event, Notice):
                    notices.append(event.message)
                elif isinstance(event, Done):
                    done = event
                yield event
        finally:
            # Runs on stop too (the consumer closes the generator): keep the partial reply.
            reply = Message.assistant("".join(text), calls)
            reply.reasoning = "".join(thought).strip()
            if reply.reasoning:
                reply.meta["thinking_s"] = thinking.seconds()
            interrupted = done is None or done.finish_reason in ("cancelled", "error")
            reply.meta.update(_round_meta(model_name or client.info.name, offered, {**params, **forced}))
            if done is not None:
                reply.meta.update(_done_meta(done))
            if notices:
                reply.meta["notices"] = notices
            if interrupted or words_only:
                reply.tool_calls = []  # an unfinished call, or one with tools withheld, is never executed
            if interrupted:
                reply.meta["interrupted"] = True
            if reply.content or reply.reasoning or reply.tool_calls or interrupted or notices:
                add(reply)
        if words_only or interrupted or not calls or executor is None:
            return  # with no executor the calls wait for the caller (manual mode) to answer them
        for call in calls:
            if cancel is not None and cancel.is_set():
                return
            started = time.perf_counter()
            key = call_key(call)
            if key in results:
                # A small model repeats a call it has the answer to until the round limit (one that was
                # not run too, word for word: a loop cut off 4 times running): answer instead.
                observation = Message.observation(
                    ALREADY_NOT_RUN if call.parse_error else ALREADY_CALLED.format(name=call.name),
                    name=call.name or None,
                    tool_call_id=call.id,
                    is_error=bool(call.parse_error),
                )
                words_only = True
            else:
                try:
                    observation = fit_observation(execute_call(call, executor), max_chars)
                except BaseException:
                    # The user stopped the page mid-call: record that, so the call is never left unanswered.
                    add(
                        Message.observation(
                            "Stopped by the user before it finished.",
                            name=call.name,
                            tool_call_id=call.id,
                            is_error=True,
                        )
                    )
                    raise
                results[key] = observation
            duration_s = time.perf_counter() - started
            observation.meta["duration_s"] = round(duration_s, 3)
            add(observation)
            yield ObservationEvent(call, observation, duration_s)


ALREADY_CALLED = (
    "You already called `{name}` with these arguments in this turn; its result is above. "
    "Answer the user now from the results you have."
)
ALREADY_NOT_RUN = (
    "You already wrote this same call in this turn, and it was not run, for the reason above. "
    "Answer the user now from the results you have."
)


def call_key(call: ToolCall) -> str:
    """What makes two calls the same: name and arguments; for one that could not run, also what the
    model wrote and why (two malformed calls may both have no arguments)."""
    if call.parse_error:
        return json.dumps([call.name, call.arguments, call.raw, call.parse_error], sort_keys=True, default=str)
    return json.dumps([call.name, call.arguments], sort_keys=True, default=str)


class ThinkingClock:
    """How long the model thought: from its first reasoning to the first event after it (or now)."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.ended: float | None = None

    def note(self, event: Event) -> None:
        if isinstance(event, ReasoningDelta):
            self.started = self.started or time.monotonic()
        elif self.started is not None and self.ended is None and not isinstance(event, Notice):
            self.ended = time.monotonic()

    def seconds(self) -> float:
        if self.started is None:
            return 0.0
        return round((self.ended or time.monotonic()) - self.started, 1)


def round_limit_notice(max_rounds: int) -> str:
    return (
        f"Stopped calling tools after {max_rounds} rounds (MAX_ROUNDS={max_rounds}): the model answers from the "
        "results so far. Ask it to continue, or raise the limit."
    )


def execute_call(call: ToolCall, executor: Executor) -> Message:
    """Run one call; every failure becomes an observation the model can act on."""
    if call.parse_error:
        return Message.observation(
            f"Your tool call was not run: {call.parse_error}",
            name=call.name or None,
            tool_call_id=call.id,
            is_error=True,
        )
    try:
        observation = executor(call)
    except Exception as error:  # an executor bug must not lose the conversation
        observation = Message.observation(
            f"Running `{call.name}` failed: {type(error).__name__}: {error}", is_error=True
        )
    observation.name = observation.name or call.name
    observation.tool_call_id = observation.tool_call_id or call.id
    return observation


def round_prompt(client: Client, conversation: list[Message], index: int, offered: list[ToolSchema]) -> PromptView:
    """The prompt the reply at `index` was written for, rendered again from what its round kept.

    `offered`: the tools at hand now, in which the round's tool names are looked up (one
    that is gone is left out). Raises ValueError for params a client cannot take.
    """
    meta = conversation[index].meta
    by_name = {function_of(tool)["name"]: tool for tool in offered}
    tools = [by_name[name] for name in meta.get("tools") or [] if name in by_name]
    return client.render_prompt(conversation[:index], tools or None, **(meta.get("params") or {}))


def _round_meta(model: str, offered: list[ToolSchema] | None, params: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "model": model,
        "params": {name: value for name, value in params.items() if value is not None},
    }
    if offered:
        meta["tools"] = [function_of(tool)["name"] for tool in offered]
    return meta


def _done_meta(done: Done) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "finish_reason": done.finish_reason,
        "prompt_tokens": done.usage.prompt_tokens,
        "completion_tokens": done.usage.completion_tokens,
        "ttft_s": round(done.timings.ttft_s, 3),
        "tokens_per_s": round(done.timings.decode_tokens_per_s, 1),
    }
    if done.error:
        meta["error"] = done.error
    if done.raw:
        meta["raw_output"] = done.raw
    return meta
