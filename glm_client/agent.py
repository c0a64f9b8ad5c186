"""The turn loop shared by Chat, Tool and Code Interpreter modes, the CLI and tests.

generate → parse calls → execute each → append observations → generate again,
until the model answers without a call or `max_rounds` is reached. The
conversation list is extended in place as each message completes, so whatever
happens (stop, error, round limit) the text written so far is kept. Each message is
final when it is appended and never changed after: `on_message(index, message)` hears
of each one then, which is how the app saves a turn (the partial reply of a stopped
turn included: it is appended when the caller closes the turn's generator).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from glm_client.client import Client
from glm_client.config import DEFAULT_MAX_ROUNDS
from glm_client.dialects.base import ToolSchema
from glm_client.events import Done, Event, Notice, TextDelta
from glm_client.messages import Message, ToolCall

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
    **params: Any,
) -> Generator[AgentEvent, None, None]:
    """Answer the conversation, running tool calls through `executor`.

    Without an executor the turn ends at the first call, leaving it for the caller
    to answer with an observation and call `run_turn` again (the Tool page's manual mode).
    `force_tool` ("any" or a tool name) constrains the first round only, so the model
    can answer in words once it has the result. Notices (trimmed history, the round
    limit) are kept in the message's `meta["notices"]` so a redraw shows them again;
    an observation keeps how long its call ran in `meta["duration_s"]`.
    """

    def add(message: Message) -> None:
        conversation.append(message)
        if on_message is not None:
            on_message(len(conversation) - 1, message)

    for round_index in range(max_rounds):
        text: list[str] = []
        calls: list[ToolCall] = []
        notices: list[str] = []
        done: Done | None = None
        forced = {"force_tool": force_tool} if force_tool and round_index == 0 else {}
        try:
            for event in client.stream(conversation, tools, cancel=cancel, **params, **forced):
                if isinstance(event, TextDelta):
                    text.append(event.text)
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
            interrupted = done is None or done.finish_reason in ("cancelled", "error")
            if done is not None:
                reply.meta.update(_done_meta(done))
            if notices:
                reply.meta["notices"] = notices
            if interrupted:
                reply.meta["interrupted"] = True
                reply.tool_calls = []  # an unfinished call is never executed
            if reply.content or reply.tool_calls or interrupted:
                add(reply)
        if interrupted or not calls or executor is None:
            return  # with no executor the calls wait for the caller (manual mode) to answer them
        last_round = round_index == max_rounds - 1
        for position, call in enumerate(calls):
            if cancel is not None and cancel.is_set():
                return
            started = time.perf_counter()
            try:
                observation = execute_call(call, executor)
            except BaseException:
                # The user stopped the page mid-call: record that, so the call is never left unanswered.
                add(
                    Message.observation(
                        "Stopped by the user before it finished.", name=call.name, tool_call_id=call.id, is_error=True
                    )
                )
                raise
            duration_s = time.perf_counter() - started
            observation.meta["duration_s"] = round(duration_s, 3)
            if last_round and position == len(calls) - 1:
                # The turn ends here: the notice goes on this message before it is final.
                observation.meta.setdefault("notices", []).append(round_limit_notice(max_rounds))
            add(observation)
            yield ObservationEvent(call, observation, duration_s)
    yield RoundLimitReached(max_rounds)
    yield Notice(round_limit_notice(max_rounds))


def round_limit_notice(max_rounds: int) -> str:
    return (
        f"Stopped after {max_rounds} rounds of tool calls without a final answer (MAX_ROUNDS={max_rounds}). "
        "Ask the model to continue, or raise the limit."
    )


def execute_call(call: ToolCall, executor: Executor) -> Message:
    """Run one call; every failure becomes an observation the model can act on."""
    if call.parse_error:
        return Message.observation(
            f"Your tool call could not be parsed: {call.parse_error}",
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
    return meta
