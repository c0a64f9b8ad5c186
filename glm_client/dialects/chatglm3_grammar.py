"""The grammar of a forced ChatGLM3 call: a metadata line, then a fenced `tool_call(...)`.

The prompt ends with a bare `<|assistant|>`, so the reply starts with the metadata
line. The grammar sees token text as xgrammar decodes it, where SentencePiece's
dummy-prefix `▁` is a space: the model was trained on `▁get_weather`, `<0x0A>`,
`▁```python`..., because the metadata line and the content are encoded apart
(CHATGLM3_FORMAT.md). So each part may start with that one space; the parser
drops it (and SentencePiece drops the first one when decoding).
"""

from __future__ import annotations

from typing import Any

from glm_client.dialects.base import ToolSchema, function_of
from glm_client.dialects.chatglm3_parser import is_keyword_name
from glm_client.dialects.literal_grammar import LiteralGrammar, ebnf_literal, sequence
from glm_client.messages import INTERPRETER

# The code of an interpreter segment: anything without a ``` fence, as constrained.CODE_FENCE_EBNF.
_CODE = r'([^`] | "`" [^`] | "``" [^`])*'


def chatglm3_tools_spec(tools: list[ToolSchema]) -> list[dict[str, Any]]:
    """The tools as plain {name, parameters} data (what crosses to the compile worker)."""
    return [
        {"name": function_of(tool)["name"], "parameters": function_of(tool).get("parameters") or {}} for tool in tools
    ]


def chatglm3_call_ebnf(tools: list[dict[str, Any]]) -> str:
    """EBNF of one ChatGLM3 call to any of `tools` (from chatglm3_tools_spec); the interpreter writes code."""
    grammar = LiteralGrammar("python")
    options = []
    for tool in tools:
        head = f'" "? {ebnf_literal(tool["name"] + chr(10))} " "? "```python\\n"'
        if tool["name"] == INTERPRETER:
            options.append(f'{head} {grammar.rule(_CODE)} "\\n```"')
            continue
        options.append(f'{head} "tool_call(" {_keywords(grammar, tool["parameters"])} ")\\n```"')
    return grammar.text(" | ".join(f"({option})" for option in options))


def _keywords(grammar: LiteralGrammar, parameters: dict[str, Any]) -> str:
    """`k=literal, ...` for the parameters; keys that are not identifiers as `**{"k": literal}`."""
    grammar.definitions = {**parameters.get("$defs", {}), **parameters.get("definitions", {})}
    properties = parameters.get("properties") or {}
    required = set(parameters.get("required") or [])
    members = []
    for key, schema in properties.items():
        value = grammar.value(schema, key in required)
        if is_keyword_name(key):
            members.append((f"{ebnf_literal(key + '=')} {value}", key in required))
        else:
            members.append((f'{ebnf_literal("**{" + grammar.literal(key) + ": ")} {value} "}}"', key in required))
    return grammar.rule(sequence(members, '", "')) if members else '""'
