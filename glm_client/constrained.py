"""Forced tool calls: constrained decoding, so even a tiny model writes a valid call.

With `force_tool` set, the engine masks every token that the grammar of a call
does not allow next. The grammar is the dialect's call syntax around one JSON
object, `{"name": <an allowed tool>, "arguments": <that tool's parameters schema>}`;
the dialect's parser then reads the finished text like any call the model wrote.

xgrammar compiles the grammar against the tokenizer's vocabulary and fills a
token bitmask per step in C++: about 0.3 ms a token here, against about 190 ms for
lm-format-enforcer, which also let `minimum`/`maximum` through; every call xgrammar
finished validated (bench/bench_constrained.py). It is imported only when a call is
forced. Free strings are bounded (FREE_STRING), so a sampled string cannot run on
to max_new_tokens and leave the call cut off.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Protocol

import torch

from glm_client.dialects.base import CallSyntax, ToolSchema, function_of, split_interpreter
from glm_client.messages import INTERPRETER

if TYPE_CHECKING:
    import xgrammar

FORCE_ANY = "any"

# A ```python fence holding anything but another fence; the parser runs its code.
CODE_FENCE_EBNF = r"""root ::= "```python\n" code "\n```"
code ::= ([^`] | "`" [^`] | "``" [^`])*"""


class TokenConstraint(Protocol):
    """What the engine's decode loop asks of a constraint, once per token."""

    def mask(self, logits: torch.Tensor) -> None:
        """Set the logits of the tokens not allowed next to -inf, in place."""
        ...

    def accept(self, token: int) -> bool:
        """Move past `token`; True when the constrained text is complete."""
        ...


def forced_tools(tools: list[ToolSchema] | None, force: str) -> list[ToolSchema]:
    """The tools a forced reply may call: all for "any", else the one named; ValueError says what is wrong."""
    if not tools:
        raise ValueError(f"force_tool={force!r} needs tools to call, but no tools were offered.")
    if force == FORCE_ANY:
        return list(tools)
    chosen = [tool for tool in tools if function_of(tool).get("name") == force]
    if not chosen:
        names = ", ".join(str(function_of(tool).get("name")) for tool in tools)
        raise ValueError(f'force_tool={force!r} is not one of the offered tools ({names}); name one of them or "any".')
    return chosen[:1]


def call_schema(tools: list[ToolSchema]) -> dict[str, Any]:
    """One JSON schema matching a call `{"name", "arguments"}` to any of `tools`."""
    options: list[dict[str, Any]] = []
    definitions: dict[str, dict[str, Any]] = {}
    for tool in tools:
        function = function_of(tool)
        parameters = dict(function.get("parameters") or {"type": "object", "properties": {}})
        if function["name"] != INTERPRETER:  # code is free text: many lines, braces and all
            parameters = _bounded_strings(parameters)
        for key in ("$defs", "definitions"):
            # A "#/$defs/X" reference now resolves against the call schema: lift the definitions there.
            definitions.setdefault(key, {}).update(parameters.pop(key, {}))
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": function["name"]}, "arguments": parameters},
                "required": ["name", "arguments"],
            }
        )
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return {**schema, **{key: found for key, found in definitions.items() if found}}


# Free strings inside a forced call may not contain braces or angle brackets (a small model
# "closes" the call by writing }}</tool_call> inside the string, which the parser then cuts)
# nor newlines, and are bounded, so a sampled string cannot run to max_new_tokens.
FREE_STRING = {"pattern": "^[^<>{}\\n]{0,120}$"}


def _bounded_strings(schema: Any) -> Any:
    """A copy of `schema` whose unconstrained string types get FREE_STRING's limits."""
    if isinstance(schema, list):
        return [_bounded_strings(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    bounded = {
        key: _bounded_strings(value) if key != "const" and key != "enum" else value for key, value in schema.items()
    }
    types = schema.get("type")
    is_string = types == "string" or (isinstance(types, list) and "string" in types)
    if is_string and not ({"enum", "const", "pattern", "format"} & schema.keys()):
        bounded = {**FREE_STRING, **bounded}
    return bounded


def call_grammar(tools: list[ToolSchema], syntax: CallSyntax) -> xgrammar.Grammar:
    """The grammar of one call to any of `tools`, written in `syntax`."""
    import xgrammar as xgr

    ordinary, interpreter = split_interpreter(tools) if syntax.code_fence else (tools, False)
    options = []
    if ordinary:
        # Compact JSON: unbounded whitespace lets a sampling model wander off in newlines.
        arguments = xgr.Grammar.from_json_schema(call_schema(ordinary), any_whitespace=False)
        options.append(xgr.Grammar.concat(_literal(syntax.open), arguments, _literal(syntax.close)))
    if interpreter:
        options.append(xgr.Grammar.from_ebnf(CODE_FENCE_EBNF))
    return options[0] if len(options) == 1 else xgr.Grammar.union(*options)


def _literal(text: str) -> xgrammar.Grammar:
    import xgrammar as xgr

    return xgr.Grammar.from_ebnf(f"root ::= {json.dumps(text, ensure_ascii=False)}")


class GrammarConstraint:
    """The state of one forced reply: which tokens its grammar allows next."""

    def __init__(self, compiled: xgrammar.CompiledGrammar, vocab_size: int) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        # The call ends with its grammar: there is no stop token to wait for.
        self._matcher = xgr.GrammarMatcher(compiled, terminate_without_stop_token=True)
        self._bitmask = xgr.allocate_token_bitmask(1, vocab_size)
        self._vocab_size = vocab_size

    def mask(self, logits: torch.Tensor) -> None:
        if self._matcher.fill_next_token_bitmask(self._bitmask):
            self._xgr.apply_token_bitmask_inplace(logits, self._bitmask, backend="cpu")
        logits[self._vocab_size :] = float("-inf")  # padding rows past the tokenizer's vocabulary

    def accept(self, token: int) -> bool:
        if not self._matcher.accept_token(token):
            raise RuntimeError(f"Token {token} does not fit the forced tool call's grammar.")
        return self._matcher.is_terminated()


class ToolCallGrammars:
    """Compiles forced-call grammars for one tokenizer.

    Indexing the vocabulary takes a fraction of a second, so it is done once per
    model; compiled grammars are cached, so a repeated tool set costs nothing.
    """

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        try:
            import xgrammar as xgr
        except ImportError:
            raise ValueError("Forcing a tool call needs the xgrammar package: pip install xgrammar.") from None

        self.vocab_size = vocab_size
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self._compiler = xgr.GrammarCompiler(info)

    def constraint(self, tools: list[ToolSchema], syntax: CallSyntax) -> GrammarConstraint:
        """A fresh constraint for one reply that must call one of `tools`."""
        try:
            compiled = self._compiler.compile_grammar(call_grammar(tools, syntax))
        except RuntimeError as error:  # xgrammar's message names the unsupported schema part
            raise ValueError(
                f"The forced tool call's grammar could not be built from the tool schemas: {error}"
            ) from None
        return GrammarConstraint(compiled, self.vocab_size)
