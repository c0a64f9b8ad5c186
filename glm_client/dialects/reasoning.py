"""Thinking models' `<think>…</think>` block, split from the reply.

Qwen3, GLM-Z1, GLM-4.5+ and the DeepSeek-R1 distills think in a `<think>` block before
they answer. Some templates open that block in the generation prompt, so the reply
starts inside it with no `<think>` of its own. `ReasoningSplitter` wraps a dialect's
parser: the block's text becomes `ReasoningDelta` events and only the rest reaches
the wrapped parser, so a call written while thinking is never run.

Only a block at the very start of the reply counts: a `<think>` in the middle of prose
is prose (a model explaining the tag, say).
"""

from __future__ import annotations

import re

from glm_client.dialects.base import OutputParser
from glm_client.events import Event, ReasoningDelta

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
# A template that takes the switch reads the variable by name (`enable_thinking is false`, …).
_SWITCH = re.compile(r"\benable_thinking\b")


def template_takes_thinking_switch(template: object) -> bool:
    """Whether a chat template's source reads `enable_thinking`."""
    sources = template.values() if isinstance(template, dict) else [template]  # named templates
    return any(isinstance(source, str) and bool(_SWITCH.search(source)) for source in sources)


def prompt_opens_thought(prompt_tail: str) -> bool:
    """Whether the end of a rendered prompt leaves a think block open (the reply starts inside it)."""
    return prompt_tail.rstrip().endswith(THINK_OPEN)


class ReasoningSplitter:
    """An OutputParser that sends a leading think block out as `ReasoningDelta` and the rest to `inner`.

    `inside`: the prompt already opened the block. Text that might be the start of a
    tag is held back until it is known, so chunking never changes the events' text.
    """

    def __init__(self, inner: OutputParser, *, inside: bool = False) -> None:
        self.inner = inner
        self._state = "thinking" if inside else "start"  # start → thinking → answer
        self._held = ""
        self._at_block_start = True  # drop the newline after <think> and before the answer
        self._repeated_open_possible = inside  # the model may write the <think> the prompt already wrote

    @property
    def ended(self) -> bool:
        return self.inner.ended

    def feed(self, text: str) -> list[Event]:
        self._held += text
        events: list[Event] = []
        if self._state == "start":
            opening = self._held.lstrip()
            if opening.startswith(THINK_OPEN):
                self._state, self._held = "thinking", opening[len(THINK_OPEN) :]
            elif THINK_OPEN.startswith(opening):
                return []  # only whitespace or part of "<think>" so far
            else:
                self._state, self._at_block_start = "answer", False
        if self._state == "thinking":
            events += self._thinking()
        if self._state == "answer" and self._held:
            held, self._held = self._held, ""
            if self._at_block_start:  # after </think>: the answer begins at its first visible character
                held = held.lstrip()
                if not held:
                    return events
                self._at_block_start = False
            events += self.inner.feed(held)
        return events

    def finish(self) -> list[Event]:
        """A reply cut off mid-thought keeps its thinking (with any half-written tag) and has no answer."""
        held, self._held = self._held, ""
        events: list[Event] = []
        if self._state == "thinking":
            thought = held.strip() if self._at_block_start else held.rstrip()
            if thought:
                events.append(ReasoningDelta(thought))
        elif held:  # "start": whitespace or part of "<think>" that never became one
            events += self.inner.feed(held)
        return events + self.inner.finish()

    def _thinking(self) -> list[Event]:
        if self._at_block_start:
            opening = self._held.lstrip()
            if self._repeated_open_possible and opening:
                if opening.startswith(THINK_OPEN):
                    opening = opening[len(THINK_OPEN) :].lstrip()
                elif THINK_OPEN.startswith(opening):
                    return []
                self._repeated_open_possible = False
            self._held = opening
            if not opening:
                return []
            self._at_block_start = False
        end = self._held.find(THINK_CLOSE)
        if end >= 0:
            thought, self._held = self._held[:end].rstrip(), self._held[end + len(THINK_CLOSE) :]
            self._state, self._at_block_start = "answer", True
            return [ReasoningDelta(thought)] if thought else []
        # Hold back what may begin "</think>", and trailing whitespace (dropped if the tag follows).
        ready = self._held[: len(self._held) - _partial_tag_length(self._held, THINK_CLOSE)].rstrip()
        if not ready:
            return []
        self._held = self._held[len(ready) :]
        return [ReasoningDelta(ready)]


def _partial_tag_length(text: str, tag: str) -> int:
    """The length of the longest end of `text` that begins `tag`."""
    for length in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-length:]):
            return length
    return 0
