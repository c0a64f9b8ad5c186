"""How much of a call's result the model reads: a share of its context, head and tail kept.

Printed numbers take a token a digit: 20,000 characters of a printed list were 19,976 tokens
for the embedded model, past its 8,192-token context, so the round after it could not run.
The agent fits every observation to the model (`fit_observation`), whichever executor made
it (the kernel, a registered tool, an MCP server); the user keeps the whole text.
"""

from __future__ import annotations

from glm_client.messages import Message

# What the model reads of one result with a long context; a shorter one reads less (observation_chars).
MAX_OBSERVATION_CHARS = 20_000


def observation_chars(context_tokens: int) -> int:
    """What a model whose context holds `context_tokens` reads of one result: a quarter of its
    context at a token a character, and no more than MAX_OBSERVATION_CHARS (0: a server that does not say)."""
    return min(MAX_OBSERVATION_CHARS, context_tokens // 4) if context_tokens > 0 else MAX_OBSERVATION_CHARS


def fit_observation(observation: Message, max_chars: int) -> Message:
    """Let the model read at most `max_chars` of `observation`, cut from its whole text, which
    stays in `meta["full_text"]` for the user (an executor may have cut it already, to a longer cap)."""
    whole = observation.meta.get("full_text", observation.content)
    if len(observation.content) > max_chars:
        observation.content = cap_middle(whole, max_chars)
        observation.meta["full_text"] = whole
    return observation


def omission_marker(omitted: int) -> str:
    return f"\n... [{omitted} characters omitted] ...\n"


def cap_middle(text: str, max_chars: int) -> str:
    """Keep the head and tail of `text` within `max_chars`, marking what was cut.

    Head and tail both matter: the head says what ran, the tail holds the final error or result.
    """
    if len(text) <= max_chars:
        return text
    # The marker's own length depends on the count it reports; size it for the worst case.
    budget = max(max_chars - len(omission_marker(len(text))), 0)
    head = budget // 2
    tail = budget - head
    omitted = len(text) - head - tail
    return text[:head] + omission_marker(omitted) + (text[-tail:] if tail else "")
