"""What a tool call produced, and how a Python value becomes text the model reads."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

# Long observations crowd the model's context window; the head is usually what matters.
MAX_RESULT_CHARS = 8_000
MAX_STDOUT_CHARS = 4_000


@dataclass
class ToolResult:
    """One tool call's outcome. `text` is what the model reads, whether the call worked or not."""

    text: str
    ok: bool = True
    error: str | None = None
    value: Any = None
    stdout: str = ""
    duration_s: float = 0.0
    truncated: bool = False
    images: list[bytes] = field(default_factory=list)  # shown to the user; the model reads `[Image]`

    @classmethod
    def failure(cls, message: str, *, stdout: str = "", duration_s: float = 0.0) -> ToolResult:
        text, truncated = cap_text(message, MAX_RESULT_CHARS)
        stdout, stdout_truncated = cap_text(stdout, MAX_STDOUT_CHARS)
        return cls(
            text=_with_stdout(text, stdout),
            ok=False,
            error=message,
            stdout=stdout,
            duration_s=duration_s,
            truncated=truncated or stdout_truncated,
        )

    @classmethod
    def success(cls, value: Any, *, stdout: str = "", duration_s: float = 0.0) -> ToolResult:
        text, truncated = cap_text(render_value(value), MAX_RESULT_CHARS)
        stdout, stdout_truncated = cap_text(stdout, MAX_STDOUT_CHARS)
        return cls(
            text=_with_stdout(text, stdout),
            value=value,
            stdout=stdout,
            duration_s=duration_s,
            truncated=truncated or stdout_truncated,
        )


def render_value(value: Any) -> str:
    """A string as is; anything else as JSON; `repr` when even that fails."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    except (TypeError, ValueError, RecursionError):  # circular references, keys that aren't strings
        pass
    try:
        return repr(value)
    except Exception as exc:  # an int past sys.get_int_max_str_digits(), a broken __repr__
        return f"<{type(value).__name__} that cannot be shown: {type(exc).__name__}: {exc}>"


def cap_text(text: str, limit: int) -> tuple[str, bool]:
    """Keep the first `limit` characters, noting how much was cut."""
    if len(text) <= limit:
        return text, False
    return f"{text[:limit]}\n[result truncated: {limit} of {len(text)} characters shown]", True


def _with_stdout(text: str, stdout: str) -> str:
    return f"{text}\n\nstdout:\n{stdout}" if stdout else text


def _json_default(obj: Any) -> Any:
    """JSON for common non-JSON types; `repr` for the rest, so one odd field doesn't lose the whole result."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, datetime.date | datetime.time):
        return obj.isoformat()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, PurePath):
        return str(obj)
    return repr(obj)
