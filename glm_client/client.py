"""The client every page, the CLI and the server talk to: messages in, events out.

`LocalClient` joins a local `Engine` (token ids in and out: devices, speed; see
glm_client/engines/) with a dialect (prompt layout, output parsing). `Client` is the
protocol the remote clients (glm_client/remote/) and the test fakes also follow, so
pages never know which one they hold; those of this package build on `StreamingClient`.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from glm_client.config import ConfigError, GenerationParams
from glm_client.constrained import TokenConstraint, ToolCallGrammars, forced_tools
from glm_client.detokenize import IncrementalDecoder, StopStrings
from glm_client.dialects.base import Dialect, OutputParser, ToolSchema
from glm_client.dialects.chat_template import ChatTemplateDialect
from glm_client.dialects.reasoning import ReasoningSplitter, prompt_opens_thought, template_takes_thinking_switch
from glm_client.engines.base import Engine, EngineInfo
from glm_client.events import (
    Done,
    Event,
    FinishReason,
    Notice,
    TextDelta,
    Timings,
    ToolCallProgress,
    ToolCallStart,
    Usage,
)
from glm_client.loop_guard import LoopGuard
from glm_client.messages import Message, ToolCall

# A reply needs room: below this many free tokens we refuse rather than write a stub.
MIN_REPLY_TOKENS = 16
PROMPT_TAIL_TOKENS = 16  # enough of the prompt's end to see a `<think>` the template left open


@dataclass(frozen=True)
class ModelInfo:
    name: str
    backend: str
    dialect: str
    device: str
    dtype: str
    context_length: int
    weights: str = ""  # e.g. "int4" when the weights are stored quantized
    thinking_switch: bool = False  # thinking can be turned on or off (the `enable_thinking` param)


@dataclass(frozen=True)
class PromptView:
    """What a model receives for one reply, for the prompt inspector.

    `text` spells out every special token (a local prompt), or is the request as sent (a
    server, API key hidden); `ids` are exactly the engine's input, None for a server.
    """

    text: str
    ids: list[int] | None
    token_count: int | None


class Client(Protocol):
    @property
    def info(self) -> ModelInfo: ...

    def render_prompt(
        self, messages: list[Message], tools: list[ToolSchema] | None = None, **params: Any
    ) -> PromptView:
        """The prompt `stream` would send for these messages, tools and params (re-rendered: nothing is stored)."""
        ...

    def stream(
        self,
        messages: list[Message],
        tools: list[ToolSchema] | None = None,
        *,
        cancel: threading.Event | None = None,
        **params: Any,
    ) -> Iterator[Event]: ...

    def chat(self, messages: list[Message], tools: list[ToolSchema] | None = None, **params: Any) -> str: ...


def collect_text(events: Iterator[Event]) -> str:
    """The reply text of a stream; raises RuntimeError if the stream ended in an error."""
    parts: list[str] = []
    for event in events:
        if isinstance(event, TextDelta):
            parts.append(event.text)
        elif isinstance(event, Done) and event.finish_reason == "error":
            raise RuntimeError(event.error or "generation failed")
    return "".join(parts)


class StreamingClient(ABC):
    """A `Client` whose `chat()` is the text of its `stream()`; a subclass writes `stream()`."""

    @abstractmethod
    def stream(
        self,
        messages: list[Message],
        tools: list[ToolSchema] | None = None,
        *,
        cancel: threading.Event | None = None,
        **params: Any,
    ) -> Iterator[Event]: ...

    def chat(self, messages: list[Message], tools: list[ToolSchema] | None = None, **params: Any) -> str:
        return collect_text(self.stream(messages, tools, **params))


class LocalClient(StreamingClient):
    """A model running in this process."""

    def __init__(self, engine: Engine, dialect: Dialect, backend: str = "transformers") -> None:
        if not isinstance(getattr(engine, "info", None), EngineInfo):
            raise TypeError(
                f"LocalClient needs an Engine such as TransformersEngine (token ids in and out), not a "
                f"{type(engine).__name__}; a Client such as OpenAIClient is used on its own."
            )
        self.engine = engine
        self.dialect = dialect
        self.info = ModelInfo(
            name=engine.info.name,
            backend=backend,
            dialect=dialect.name,
            device=engine.info.device,
            dtype=engine.info.dtype,
            context_length=engine.info.context_length,
            weights=engine.info.weights,
            thinking_switch=isinstance(dialect, ChatTemplateDialect)
            and template_takes_thinking_switch(dialect.tokenizer.chat_template),
        )
        self._stop_ids = set(dialect.stop_token_ids())
        self._grammars: ToolCallGrammars | None = None  # built at the first forced call
        self._grammars_lock = threading.Lock()

    def stream(
        self,
        messages: list[Message],
        tools: list[ToolSchema] | None = None,
        *,
        cancel: threading.Event | None = None,
        **params: Any,
    ) -> Iterator[Event]:
        started = time.perf_counter()
        try:
            settings = GenerationParams.from_kwargs(**params)
            constraint = self._forced_call(tools, settings.force_tool) if settings.force_tool else None
            prompt, dropped = self.fit_context(messages, tools, settings.max_new_tokens, settings.enable_thinking)
        except (ConfigError, ValueError) as error:
            yield Done("error", error=str(error))
            return
        if dropped:
            yield Notice(
                f"The conversation is longer than the model's {self.info.context_length}-token context: "
                f"the {dropped} oldest message(s) were left out of the prompt (the system prompt stays)."
            )
        room = self.info.context_length - len(prompt)
        if room < MIN_REPLY_TOKENS:
            yield Done(
                "error",
                Usage(prompt_tokens=len(prompt)),
                error=f"The last message is too long for the model's {self.info.context_length}-token context "
                f"({len(prompt)} tokens); shorten it.",
            )
            return
        if room < settings.max_new_tokens:
            settings = GenerationParams(**{**settings.__dict__, "max_new_tokens": room})

        parser = self._parser(tools, prompt, forced=constraint is not None)
        decoder = IncrementalDecoder(self._decode)
        stops = StopStrings(settings.stop)
        # A forced call is promised schema-valid, and one cut short would not parse: let its grammar end it.
        loop_guard = LoopGuard(0 if constraint else settings.loop_stop_tokens)
        looped = False
        generated = 0
        first_token_at: float | None = None
        made_call = False
        call_tokens: int | None = None  # tokens of the call being written; None outside a call
        raw: list[str] = []  # the text the parser read, for the prompt inspector
        try:
            for token in self.engine.generate(prompt, settings, self._stop_ids, cancel, constraint):
                generated += 1
                first_token_at = first_token_at or time.perf_counter()
                raw.append(stops.feed(decoder.push(token)))
                events = parser.feed(raw[-1])
                yield from events
                for event in events:
                    if isinstance(event, ToolCallStart):
                        call_tokens = 0
                    elif isinstance(event, ToolCall):
                        made_call, call_tokens = True, None
                if call_tokens is not None:
                    call_tokens += 1
                    if not events:  # a token of the call that showed nothing: say the call is growing
                        yield ToolCallProgress(call_tokens)
                if stops.stopped or parser.ended:  # the rest would be dropped: spare its tokens
                    break
                if loop_guard.feed(token):
                    looped = True
                    break
            raw.append(stops.feed(decoder.flush()) + stops.flush())
            tail = parser.feed(raw[-1])
            ended = stops.stopped or parser.ended  # before finish(), which ends the parser whatever it held
            tail += parser.finish()
            if looped or (generated >= settings.max_new_tokens and not ended):
                # The reply was cut off inside a call: the model did not finish that code or those
                # arguments, so it is answered with why, and not run.
                cut_by = "was stopped as a loop" if looped else f"reached max_new_tokens={settings.max_new_tokens}"
                for event in tail:
                    if isinstance(event, ToolCall) and not event.parse_error:
                        event.parse_error = f"The reply {cut_by} before the call ended, so it was not run."
            made_call = made_call or any(isinstance(event, ToolCall) for event in tail)
            yield from tail
            if looped:
                yield Notice(loop_notice(settings.loop_stop_tokens))
        except Exception as error:  # a failing model must not take the page with it
            yield Done(
                "error",
                Usage(len(prompt), generated),
                self._timings(started, first_token_at, generated),
                f"{type(error).__name__}: {error}",
                "".join(raw),
            )
            return
        reason: FinishReason
        if cancel is not None and cancel.is_set():
            reason = "cancelled"
        elif made_call:
            reason = "tool_calls"
        elif generated >= settings.max_new_tokens and not stops.stopped:
            reason = "length"
        else:
            reason = "stop"
        timings = self._timings(started, first_token_at, generated)
        yield Done(reason, Usage(len(prompt), generated), timings, raw="".join(raw))

    def render_prompt(
        self, messages: list[Message], tools: list[ToolSchema] | None = None, **params: Any
    ) -> PromptView:
        settings = GenerationParams.from_kwargs(**params)
        ids, _ = self.fit_context(messages, tools, settings.max_new_tokens, settings.enable_thinking)
        with self.engine.tokenizer_lock:
            text = self.dialect.prompt_text(ids)
        return PromptView(text, ids, len(ids))

    def _forced_call(self, tools: list[ToolSchema] | None, force: str) -> TokenConstraint:
        """The constraint that makes the reply a call to one of `tools` ("any") or to the one named."""
        chosen = forced_tools(tools, force)
        syntax = self.dialect.call_syntax()
        if syntax is None:
            raise ValueError(
                f"Forcing a tool call is not supported with the {self.dialect.name} dialect yet; unset force_tool."
            )
        with self._grammars_lock:
            if self._grammars is None:
                with self.engine.tokenizer_lock:
                    self._grammars = ToolCallGrammars(self.engine.tokenizer, self.engine.vocab_size)
        return self._grammars.constraint(chosen, syntax)

    def fit_context(
        self,
        messages: list[Message],
        tools: list[ToolSchema] | None,
        max_new_tokens: int,
        enable_thinking: bool | None = None,
    ) -> tuple[list[int], int]:
        """Prompt ids that leave room for the reply, dropping the oldest turns if needed.

        Whole turns go (a user message with the replies and observations after it),
        so no observation is left without its call. The system prompt and the last
        user turn always stay. Returns (ids, number of messages dropped): the fewest
        oldest turns whose dropping makes the prompt fit, or all but the last turn.

        Dropping turns one by one re-encoded the whole history per turn: quadratic
        (2000 turns took 400 s). Dropping a turn never lengthens the prompt (templates
        render message by message), so the search gallops back from the newest turn
        and then bisects: O(log turns) encodes, each of a prompt near the budget's size.
        """
        if not messages:
            raise ValueError("There are no messages to answer.")
        budget = self.info.context_length - min(max_new_tokens, self.info.context_length // 2)
        prompt = self._encode(list(messages), tools, enable_thinking)
        starts = _turn_starts(messages)
        if len(prompt) <= budget or len(starts) < 2:
            return prompt, 0
        system = list(messages[: starts[0]])
        encoded: dict[int, list[int]] = {0: prompt}

        def fits(turn: int) -> bool:  # with the turns before `turn` dropped
            if turn not in encoded:
                encoded[turn] = self._encode(system + list(messages[starts[turn] :]), tools, enable_thinking)
            return len(encoded[turn]) <= budget

        last = len(starts) - 1
        if not fits(last):
            low = high = last  # nothing fits: only the last turn is left
        else:
            low, high, step = last - 1, last, 1  # fits(high); find a `low` that does not
            while low > 0 and fits(low):
                high, step = low, step * 2
                low = max(high - step, 0)
            while high - low > 1:  # not fits(low), fits(high)
                middle = (low + high) // 2
                if fits(middle):
                    high = middle
                else:
                    low = middle
        return encoded[high], starts[high] - starts[0]

    def _encode(
        self, messages: list[Message], tools: list[ToolSchema] | None, enable_thinking: bool | None = None
    ) -> list[int]:
        with self.engine.tokenizer_lock:
            if enable_thinking is not None and isinstance(self.dialect, ChatTemplateDialect):
                return self.dialect.encode(messages, tools, enable_thinking=enable_thinking)
            return self.dialect.encode(messages, tools)

    def _parser(self, tools: list[ToolSchema] | None, prompt: list[int], forced: bool) -> OutputParser:
        """The dialect's parser behind a splitter of `<think>` blocks.

        The reply starts inside one when the rendered prompt ends with `<think>` (the
        template opened it). A forced call is written from the first token: no thinking.
        """
        parser = self.dialect.new_parser(tools)
        if forced:
            return parser
        return ReasoningSplitter(parser, inside=prompt_opens_thought(self._decode(prompt[-PROMPT_TAIL_TOKENS:])))

    def _decode(self, ids: list[int]) -> str:
        with self.engine.tokenizer_lock:
            return self.dialect.decode(ids)

    @staticmethod
    def _timings(started: float, first_token_at: float | None, generated: int) -> Timings:
        now = time.perf_counter()
        if first_token_at is None:
            return Timings(ttft_s=0.0, total_s=now - started)
        decode_time = now - first_token_at
        speed = (generated - 1) / decode_time if generated > 1 and decode_time > 0 else 0.0
        return Timings(ttft_s=first_token_at - started, total_s=now - started, decode_tokens_per_s=speed)

    def close(self) -> None:
        """Unload: end the engine's decode thread, free its weights, stop the grammar worker, return the memory.

        A reply still streaming from this client ends with Done("error") after the text it
        already produced ("The engine has shut down."), and so does every later request.
        """
        close_engine = getattr(self.engine, "close", None)  # the Engine protocol has no close(); test fakes lack it
        if callable(close_engine):
            close_engine()
        with self._grammars_lock:
            grammars, self._grammars = self._grammars, None
        if grammars is not None:
            grammars.close()
        import gc

        from glm_client.loader import release_free_memory  # the loader imports this module

        gc.collect()  # the weights sit in reference cycles (modules, hooks) that only the collector frees
        release_free_memory()


def loop_notice(loop_stop_tokens: int) -> str:
    return (
        "Stopped the reply: the model was writing the same text over and over "
        f"(loop_stop_tokens={loop_stop_tokens}; 0 lets it run on)."
    )


def _turn_starts(messages: list[Message]) -> list[int]:
    """Where each droppable turn starts: the first non-system message, then each user message after it.

    Dropping the first k turns keeps the leading system messages and messages[starts[k]:].
    """
    first = next((index for index, message in enumerate(messages) if message.role != "system"), None)
    if first is None:
        return []
    return [first] + [index for index in range(first + 1, len(messages)) if messages[index].role == "user"]
