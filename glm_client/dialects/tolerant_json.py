"""JSON as small models write it in tool calls, read when it is unambiguous.

Tried in order, each exact in what it accepts (nothing is guessed):
1. JSON;
2. JSON5 (the json5 library): single quotes, trailing commas, // and /* */ comments,
   unquoted keys;
3. a Python literal (ast.literal_eval): triple-quoted strings for code, True/None.

Measured on the patterns small models write (issue 14): json-repair also "repaired"
a triple-quoted code string into "" and pulled `{'a': 1}` out of prose, so it is not used;
json5 alone misses triple quotes and True/None; ast alone misses comments and true/null.
"""

from __future__ import annotations

import ast
import json
from typing import Any

import json5


def load(text: str) -> Any:
    """The value `text` holds; raises ValueError when no reading applies."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return json5.loads(text)
    except (ValueError, RecursionError):
        pass
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ValueError("not JSON, JSON5 or a Python literal") from None


def load_several(text: str) -> list[Any] | None:
    """The values of `text`: one value, or several one after another (one per line, or
    consecutive JSON objects). None when it is not entirely made of values."""
    try:
        return [load(text)]
    except ValueError:
        pass
    values = _consecutive_json(text)
    if values is not None:
        return values
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return None
    try:
        return [load(line) for line in lines]
    except ValueError:
        return None


def _consecutive_json(text: str) -> list[Any] | None:
    decoder = json.JSONDecoder()
    values, position = [], 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return None
        values.append(value)
    return values if len(values) > 1 else None
