"""EBNF for tool arguments written as literals, built from the tool's JSON schema.

Forced calls in formats that are not one JSON object need their own grammar:
ChatGLM3 writes `tool_call(k=<Python literal>, ...)`, GLM-4.5 writes each argument
as its own `<arg_value>` (raw text for strings, JSON otherwise). Both are built
here as xgrammar EBNF text (plain strings, so the compile worker can build them).

Strings are double-quoted with no escapes and no control characters, so one
spelling is a valid literal in Python and in JSON with the same value; like
constrained.FREE_STRING they hold no `<>{}` and are bounded. Supported: types
(and lists of them), enum, const, anyOf/oneOf, local `$ref`s, nested objects
(required keys always, optional ones optionally, in schema order), arrays
(minItems/maxItems), string minLength/maxLength, integer ranges of fewer than
SMALL_RANGE values, and otherwise the sign a minimum of 0 or more implies. Not
enforced (the validated dispatch reports them to the model): other numeric
bounds, string pattern/format (refusing them would refuse common schemas),
uniqueItems.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from glm_client.dialects.chatglm3_parser import python_literal

Flavour = Literal["python", "json"]

FREE_STRING_CHARS = 120  # as constrained.FREE_STRING
MAX_ITEMS = 8  # an unbounded list lets a sampling model run on to max_new_tokens
SMALL_RANGE = 256  # an integer range this small is written out value by value, so its bounds hold
_CHAR = r'[^"\\\x00-\x1f<>{}]'
_FIRST_CHAR = r'[^"\\\x00-\x20<>{}]'  # a required string is never blank
# A raw GLM-4.5 string value: anything but the `<` that starts `</arg_value>`.
_RAW_CHAR = r"[^<\x00-\x08\x0b-\x1f]"
_RAW_FIRST_CHAR = r"[^<\x00-\x20]"
_MAX_DEPTH = 16  # $ref chains and nesting: a recursive schema is refused, not looped on


def ebnf_literal(text: str) -> str:
    """`text` as an EBNF string literal."""
    return json.dumps(text, ensure_ascii=False)


class LiteralGrammar:
    """Collects the rules of one grammar; `value` returns an expression for one schema."""

    def __init__(self, flavour: Flavour, definitions: dict[str, Any] | None = None) -> None:
        self.flavour = flavour
        self.definitions = definitions or {}
        self.rules: dict[str, str] = {}

    def rule(self, body: str) -> str:
        """A named rule for `body` (same body, same name): keeps the grammar text small."""
        for name, existing in self.rules.items():
            if existing == body:
                return name
        name = f"r{len(self.rules)}"
        self.rules[name] = body
        return name

    def text(self, root: str) -> str:
        return "\n".join([f"root ::= {root}", *(f"{name} ::= {body}" for name, body in self.rules.items())])

    # --- values ---------------------------------------------------------------------
    def value(self, schema: Any, required: bool = False, depth: int = 0) -> str:
        """An EBNF expression for a literal valid against `schema`."""
        if depth > _MAX_DEPTH:
            raise ValueError("the tool schema nests too deep (or refers to itself) for a forced call.")
        if not isinstance(schema, dict) or not schema:
            return self.rule(self._any())
        if "$ref" in schema:
            return self.value(self._resolve(schema["$ref"]), required, depth + 1)
        if "const" in schema:
            return ebnf_literal(self.literal(schema["const"]))
        if "enum" in schema:
            return "(" + " | ".join(ebnf_literal(self.literal(item)) for item in schema["enum"]) + ")"
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list):
                merged = [{**_without(schema, key), **option} for option in schema[key]]
                return "(" + " | ".join(self.value(option, required, depth + 1) for option in merged) + ")"
        types = schema.get("type")
        if isinstance(types, list):
            return "(" + " | ".join(self.value({**schema, "type": t}, required, depth + 1) for t in types) + ")"
        if types is None:
            types = "object" if "properties" in schema else "array" if "items" in schema else None
        maker = {
            "string": lambda: self.string(schema, required),
            "integer": lambda: self._integer(schema),
            "number": lambda: self._number(schema),
            "boolean": lambda: '("True" | "False")' if self.flavour == "python" else '("true" | "false")',
            "null": lambda: '"None"' if self.flavour == "python" else '"null"',
            "array": lambda: self._array(schema, depth),
            "object": lambda: self._object(schema, depth),
        }.get(types)  # type: ignore[arg-type]
        return maker() if maker else self.rule(self._any())

    def literal(self, value: Any) -> str:
        """The text of a constant: Python or JSON."""
        return json.dumps(value, ensure_ascii=False) if self.flavour == "json" else python_literal(value)

    def string(self, schema: dict[str, Any], required: bool = False, raw: bool = False) -> str:
        """A quoted string (`raw`: unquoted, for GLM-4.5 values) within the schema's lengths."""
        low = int(schema.get("minLength", 1 if required else 0))
        high = int(schema.get("maxLength", FREE_STRING_CHARS))
        low, high = max(low, 0), max(min(high, FREE_STRING_CHARS), 0)
        char, first = (_RAW_CHAR, _RAW_FIRST_CHAR) if raw else (_CHAR, _FIRST_CHAR)
        if low > high:
            raise ValueError(f"a string with minLength {low} cannot be forced within {high} characters.")
        if low >= 1:
            body = f"{first} {char}{{{low - 1},{high - 1}}}"
        else:
            body = f"({first} {char}{{0,{high - 1}}})?" if high else ""
        quote = "" if raw else '"\\"" '
        close = "" if raw else ' "\\""'
        return self.rule(f"{quote}{body}{close}".strip() or '""')

    def _integer(self, schema: dict[str, Any]) -> str:
        low, high = schema.get("minimum"), schema.get("maximum")
        if isinstance(low, int) and isinstance(high, int) and 0 <= high - low < SMALL_RANGE:
            return "(" + " | ".join(ebnf_literal(str(number)) for number in range(low, high + 1)) + ")"
        return self.rule(f'{self._sign(schema)}("0" | [1-9] [0-9]{{0,15}})')

    def _number(self, schema: dict[str, Any]) -> str:
        digits = '("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,15})?'
        return self.rule(f"{self._sign(schema)}{digits}")

    @staticmethod
    def _sign(schema: dict[str, Any]) -> str:
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        return "" if isinstance(low, int | float) and low >= 0 else '"-"? '

    def _array(self, schema: dict[str, Any], depth: int) -> str:
        item = self.value(schema.get("items", {}), depth=depth + 1)
        low = int(schema.get("minItems", 0))
        high = min(int(schema.get("maxItems", MAX_ITEMS)), max(low, MAX_ITEMS))
        if low > high or high < 0:
            raise ValueError("an array's minItems is above its maxItems.")
        if high == 0:
            return '"[]"'
        rest = f'(", " {item}){{{max(low - 1, 0)},{high - 1}}}'
        items = f"{item} {rest}" if low >= 1 else f"({item} {rest})?"
        return self.rule(f'"[" {items} "]"')

    def _object(self, schema: dict[str, Any], depth: int) -> str:
        properties = schema.get("properties")
        if not isinstance(properties, dict) or not properties:
            return self.rule(self._any_dict())
        required = set(schema.get("required") or [])
        members = [
            (
                f"{ebnf_literal(self.literal(str(key)) + ': ')} {self.value(sub, key in required, depth + 1)}",
                key in required,
            )
            for key, sub in properties.items()
        ]
        body = sequence(members, '", "')
        return self.rule(f'"{{" {body} "}}"' if body else '"{}"')

    def _any(self) -> str:
        """A flat value for a schema that says nothing: string, number, boolean or null."""
        words = '"True" | "False" | "None"' if self.flavour == "python" else '"true" | "false" | "null"'
        return f"{self.string({})} | {self._number({})} | {words}"

    def _any_dict(self) -> str:
        key, value = self.string({}, required=True), self.rule(self._any())
        return f'"{{" ({key} ": " {value} (", " {key} ": " {value}){{0,{MAX_ITEMS - 1}}})? "}}"'

    def _resolve(self, reference: str) -> Any:
        for prefix in ("#/$defs/", "#/definitions/"):
            if reference.startswith(prefix) and reference[len(prefix) :] in self.definitions:
                return self.definitions[reference[len(prefix) :]]
        raise ValueError(f"the tool schema's reference {reference!r} is not a local definition.")


def sequence(members: list[tuple[str, bool]], separator: str) -> str:
    """Members in order, separated by `separator`: required ones always, optional ones optionally.

    Empty when every member is optional and none is written.
    """
    if not members:
        return ""
    first = next((i for i, (_, needed) in enumerate(members) if needed), None)
    if first is None:  # all optional: choose which comes first, the rest follow optionally
        options = []
        for index, (expr, _) in enumerate(members):
            tail = " ".join(f"({separator} {later})?" for later, _ in members[index + 1 :])
            options.append(f"{expr} {tail}".strip())
        return "(" + " | ".join(options) + ")?"
    head = " ".join(f"({expr} {separator})?" for expr, _ in members[:first])
    parts = [head, members[first][0]]
    parts += [f"{separator} {expr}" if needed else f"({separator} {expr})?" for expr, needed in members[first + 1 :]]
    return " ".join(part for part in parts if part)


def joined(members: list[tuple[str, bool]]) -> str:
    """Members that each carry their own delimiters, in order: required ones always, optional ones optionally."""
    return " ".join(expr if needed else f"({expr})?" for expr, needed in members)


def _without(schema: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k != key}
