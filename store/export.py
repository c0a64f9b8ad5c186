"""Conversations out as Markdown or OpenAI-format JSON, and back in from JSON.

The JSON export is `{"title", "mode", "messages"}` with messages in the OpenAI
chat format (observations become `tool` messages). Images are not part of that
format: they are left out of JSON and shown as `[Image]` in Markdown. Replies that
were stopped before they finished are listed by position in `"interrupted"` (the
Markdown says "(interrupted)"), so the messages stay plain OpenAI ones. A reply's
thinking travels as `reasoning_content`, the name vLLM and SGLang use; the Markdown
quotes it under "Thinking".

The Markdown export is opened in other viewers, so it goes through the same sanitiser
as the page (ui.render.safe_markdown): no raw HTML, no remote images, links as text.
"""

from __future__ import annotations

import json
import re
from typing import Any

from glm_client.messages import Message
from store.base import Conversation
from ui.render import safe_markdown  # pure: imports no streamlit

DEFAULT_MODE = "chat"
ROLE_HEADINGS = {"system": "System", "user": "User", "assistant": "Assistant", "observation": "Observation"}


def to_markdown(conversation: Conversation) -> str:
    parts = [f"# {conversation.title or 'Untitled conversation'}", f"*Mode: {conversation.mode}*"]
    parts += (_message_markdown(message) for message in conversation.messages)
    # The whole document at once: a reference definition in one message can turn text in
    # another into a link or image, and titles and tool names are model- or import-made too.
    return safe_markdown("\n\n".join(parts) + "\n")


def to_openai_json(conversation: Conversation) -> str:
    document: dict[str, Any] = {
        "title": conversation.title,
        "mode": conversation.mode,
        "messages": [message.to_openai() for message in conversation.messages],
    }
    interrupted = [index for index, message in enumerate(conversation.messages) if message.meta.get("interrupted")]
    if interrupted:
        document["interrupted"] = interrupted
    return json.dumps(document, indent=2, ensure_ascii=False)


def from_openai_json(text: str | bytes) -> tuple[str, str, list[Message]]:
    """(title, mode, messages) from an export, or from a bare list of OpenAI messages.

    Raises ValueError with one sentence saying what is wrong.
    """
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"The file is not valid JSON ({error}).") from None
    title, mode = "", DEFAULT_MODE
    interrupted: list[int] = []
    if isinstance(document, dict):
        if not isinstance(document.get("messages"), list):
            raise ValueError('The JSON object has no "messages" list; expected {"messages": [...]} or a list.')
        title, mode = document.get("title") or "", document.get("mode") or DEFAULT_MODE
        if not isinstance(title, str) or not isinstance(mode, str):
            raise ValueError('"title" and "mode" must be strings.')
        interrupted = document.get("interrupted") or []
        count = len(document["messages"])
        positions_ok = isinstance(interrupted, list) and all(
            type(index) is int and 0 <= index < count for index in interrupted
        )
        if not positions_ok:
            raise ValueError('"interrupted" must be a list of message positions, counting from 0.')
        document = document["messages"]
    elif not isinstance(document, list):
        raise ValueError("Expected a JSON object with a messages list, or a list of messages.")
    messages = [_parse_message(number, item) for number, item in enumerate(document, start=1)]
    for index in interrupted:
        messages[index].meta["interrupted"] = True
    return title, mode, messages


def _parse_message(number: int, item: Any) -> Message:
    if not isinstance(item, dict):
        raise ValueError(f"Message {number} is not a JSON object.")
    try:
        return Message.from_openai(item)
    except ValueError as error:
        raise ValueError(f"Message {number}: {error}") from None
    except (AttributeError, KeyError, TypeError):
        raise ValueError(f"Message {number} is not a valid OpenAI chat message.") from None


def _message_markdown(message: Message) -> str:
    heading = ROLE_HEADINGS[message.role]
    if message.role == "observation" and message.name:
        heading += f" · `{message.name}`"
    if message.is_error:
        heading += " (error)"
    if message.meta.get("interrupted"):
        heading += " (interrupted)"
    lines = [f"## {heading}"]
    if message.reasoning:  # before the reply, as it was thought; quoted so it reads apart from the answer
        lines += ["**Thinking**", _quote(message.reasoning)]
    if message.role == "observation":
        lines.append(_fence(message.content, "text") if message.content else "")
        lines += ["[Image]"] * len(message.images)
    elif message.content:
        lines.append(message.content)
    for call in message.tool_calls:
        if call.is_interpreter:
            lines += [f"**Code** (`{call.id}`)", _fence(call.code, "python")]
        else:
            arguments = json.dumps(call.arguments, indent=2, ensure_ascii=False)
            lines += [f"**Tool call** `{call.name}` (`{call.id}`)", _fence(arguments, "json")]
    return "\n\n".join(line for line in lines if line)


def _quote(text: str) -> str:
    return "\n".join(f"> {line}".rstrip() for line in text.splitlines())


def _fence(text: str, language: str) -> str:
    # A fence longer than any backtick run inside, so code containing ``` stays one block.
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text}\n{fence}"
