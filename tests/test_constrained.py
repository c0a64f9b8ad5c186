"""Forced tool calls: the real embedded model, constrained by grammar, always writes a valid call."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import torch
import xgrammar as xgr

from glm_client import ConfigError, Done, GenerationParams, LocalClient, Message, TextDelta, ToolCall
from glm_client.agent import ObservationEvent, run_turn
from glm_client.constrained import (
    CALL_SEPARATORS,
    FREE_STRING,
    REQUIRED_STRING,
    call_grammar,
    call_schema,
    forced_tools,
)
from glm_client.dialects.base import INTERPRETER_TOOL, CallSyntax, function_of
from tools import dispatch_tool, get_tools


def tool(name: str, properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    parameters = {"type": "object", "properties": properties, "required": required or list(properties)}
    return {
        "type": "function",
        "function": {"name": name, "description": f"The {name} tool.", "parameters": parameters},
    }


THERMOSTAT = tool(
    "set_thermostat",
    {"mode": {"type": "string", "enum": ["heat", "cool", "off"]}, "celsius": {"type": "integer", "minimum": 10}},
)
ORDER = tool(
    "order_pizza",
    {
        "customer": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "floor": {"type": "integer"}},
            "required": ["name", "floor"],
        },
        "size": {"type": "string", "enum": ["small", "large"]},
    },
)
TAGS = tool(
    "tag_photo",
    {"photo_id": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
)
SCHEMAS = [
    (THERMOSTAT, "Make it warmer in here, 23 degrees please."),
    (ORDER, "I'm Bo on the 4th floor, get me a big pizza."),
    (TAGS, "Tag photo 77 with cat and sofa."),
]
SAMPLED = {"temperature": 1.0, "top_p": 1.0}


def stream(client, messages, tools, **params):
    events = list(client.stream(messages, tools, max_new_tokens=160, **params))
    done = events[-1]
    assert isinstance(done, Done)
    return [e for e in events if isinstance(e, ToolCall)], done


def assert_valid_call(calls: list[ToolCall], done: Done, allowed: list[dict[str, Any]]) -> ToolCall:
    assert done.finish_reason == "tool_calls", done
    assert len(calls) == 1 and calls[0].parse_error is None, calls
    schemas = {function_of(t)["name"]: function_of(t)["parameters"] for t in allowed}
    assert calls[0].name in schemas
    jsonschema.validate(calls[0].arguments, schemas[calls[0].name])
    return calls[0]


# --- without the model ------------------------------------------------------------------------
def test_forced_tools_are_all_for_any_or_the_one_named():
    assert forced_tools([THERMOSTAT, TAGS], "any") == [THERMOSTAT, TAGS]
    assert forced_tools([THERMOSTAT, TAGS], "tag_photo") == [TAGS]
    with pytest.raises(ValueError, match=r"'nope' is not one of the offered tools \(set_thermostat, tag_photo\)"):
        forced_tools([THERMOSTAT, TAGS], "nope")
    with pytest.raises(ValueError, match="no tools were offered"):
        forced_tools(None, "any")


def test_the_call_schema_pins_the_name_and_lifts_definitions():
    one = call_schema([THERMOSTAT])
    assert one["properties"]["name"] == {"const": "set_thermostat"}
    assert one["properties"]["arguments"] == function_of(THERMOSTAT)["parameters"]
    referring = tool("f", {"point": {"$ref": "#/$defs/Point"}})
    function_of(referring)["parameters"]["$defs"] = {"Point": {"type": "object"}}
    both = call_schema([THERMOSTAT, referring])
    assert [option["properties"]["name"]["const"] for option in both["anyOf"]] == ["set_thermostat", "f"]
    assert both["$defs"] == {"Point": {"type": "object"}}
    jsonschema.validate({"name": "f", "arguments": {"point": {}}}, both)


def test_free_strings_are_bounded_but_the_interpreters_code_is_not():
    arguments = call_schema([TAGS])["properties"]["arguments"]
    assert arguments["properties"]["tags"]["items"]["pattern"] == FREE_STRING["pattern"]
    assert "pattern" not in call_schema([THERMOSTAT])["properties"]["arguments"]["properties"]["mode"]  # an enum
    code = call_schema([INTERPRETER_TOOL])["properties"]["arguments"]
    assert code == function_of(INTERPRETER_TOOL)["parameters"]


NOTE = tool(
    "note",
    {"expression": {"type": "string"}, "label": {"type": "string"}},
    required=["expression"],
)


def grammar_accepts(schema: dict[str, Any], arguments: dict[str, Any]) -> bool:
    """Whether `schema`'s forced-call grammar takes this call whole (a printable-ASCII vocabulary: no model)."""
    vocabulary = xgr.TokenizerInfo([chr(code) for code in range(32, 127)])
    compiled = xgr.GrammarCompiler(vocabulary).compile_grammar(call_grammar([schema], CallSyntax()))
    matcher = xgr.GrammarMatcher(compiled, terminate_without_stop_token=True)
    call = {"name": function_of(schema)["name"], "arguments": arguments}
    text = json.dumps(call, separators=CALL_SEPARATORS)
    return matcher.accept_string(f"<tool_call>{text}</tool_call>") and matcher.is_terminated()


def test_a_required_free_string_cannot_be_blank_but_an_optional_one_can():
    assert not grammar_accepts(NOTE, {"expression": ""})
    assert not grammar_accepts(NOTE, {"expression": "  "})
    assert grammar_accepts(NOTE, {"expression": "37 * 3"})
    assert grammar_accepts(NOTE, {"expression": "37 * 3", "label": ""})
    assert grammar_accepts(NOTE, {"expression": "37 * 3", "label": "  "})
    # Nested objects too: the customer's name is required there.
    customer = call_schema([ORDER])["properties"]["arguments"]["properties"]["customer"]
    assert customer["properties"]["name"]["pattern"] == REQUIRED_STRING["pattern"]


def test_force_tool_must_be_a_name():
    assert GenerationParams.from_kwargs(force_tool="any").force_tool == "any"
    with pytest.raises(ConfigError, match="force_tool must be"):
        GenerationParams(force_tool="  ")


# --- the real model -----------------------------------------------------------------------------
@pytest.mark.model
@pytest.mark.parametrize(("schema", "question"), SCHEMAS, ids=["enum+integer", "nested", "array"])
@pytest.mark.parametrize("sampling", [{"temperature": 0.0}, {**SAMPLED, "seed": 3}], ids=["greedy", "sampled"])
def test_a_named_forced_call_validates_against_its_schema(embedded_client, schema, question, sampling):
    offered = [THERMOSTAT, ORDER, TAGS]
    calls, done = stream(
        embedded_client, [Message.user(question)], offered, force_tool=function_of(schema)["name"], **sampling
    )
    call = assert_valid_call(calls, done, [schema])
    assert call.raw.startswith("<tool_call>") and call.raw.endswith("</tool_call>")


@pytest.mark.model
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_any_forced_call_is_one_of_the_tools_and_validates(embedded_client, seed):
    offered = [THERMOSTAT, ORDER, TAGS, *get_tools()]
    calls, done = stream(
        embedded_client, [Message.user("Help me out.")], offered, force_tool="any", **SAMPLED, seed=seed
    )
    assert_valid_call(calls, done, offered)


@pytest.mark.model
def test_the_named_tool_is_called_even_when_the_question_is_about_another(embedded_client):
    calls, done = stream(
        embedded_client, [Message.user("What is 2 + 2?")], get_tools(), force_tool="get_weather", temperature=0.0
    )
    assert assert_valid_call(calls, done, get_tools()).name == "get_weather"


@pytest.mark.model
@pytest.mark.parametrize("question", ["What is 37 * 3?", "Compute 12 + 30."])
def test_a_forced_calculator_call_has_an_expression(embedded_client, question):
    # Greedy, this model wrote {"expression": ""} for both while the grammar allowed an empty string.
    calls, done = stream(
        embedded_client, [Message.user(question)], get_tools(), force_tool="calculator", temperature=0.0
    )
    call = assert_valid_call(calls, done, get_tools())
    assert call.name == "calculator" and call.arguments["expression"].strip()


@pytest.mark.model
def test_the_interpreter_is_forced_as_a_python_fence(embedded_client):
    calls, done = stream(
        embedded_client,
        [Message.user("Print the squares of 1 to 5.")],
        [INTERPRETER_TOOL],
        force_tool="interpreter",
        temperature=0.0,
    )
    assert done.finish_reason == "tool_calls" and len(calls) == 1 and calls[0].parse_error is None
    assert calls[0].name == "interpreter" and calls[0].arguments["code"].strip()
    assert calls[0].raw.startswith("```python\n") and calls[0].raw.endswith("\n```")


@pytest.mark.model
def test_an_unknown_forced_tool_is_a_clear_error(embedded_client):
    calls, done = stream(embedded_client, [Message.user("hi")], get_tools(), force_tool="teleport")
    assert calls == [] and done.finish_reason == "error"
    assert done.error.startswith("force_tool='teleport' is not one of the offered tools (calculator, ")


class RecordingClient:
    """Passes through to the real client, noting each round's prompt."""

    def __init__(self, client: LocalClient) -> None:
        self.client, self.info, self.prompts = client, client.info, []

    def stream(self, messages, tools=None, **params):
        self.prompts.append((self.client.dialect.decode(self.client.dialect.encode(messages, tools)), params))
        return self.client.stream(messages, tools, **params)


@pytest.mark.model
def test_a_forced_call_runs_the_real_tool_and_the_next_round_answers_from_it(embedded_client):
    recording = RecordingClient(embedded_client)
    conversation = [Message.user("What is 37 * 3? Use the calculator.")]

    def executor(call: ToolCall) -> Message:
        return Message.observation(dispatch_tool(call.name, call.arguments).text, name=call.name)

    events = list(
        run_turn(
            recording,
            conversation,
            executor,
            get_tools(),
            max_rounds=2,
            force_tool="calculator",
            temperature=0.0,
            # Room for the longest call the grammar allows: greedy, the expression runs to its 120 characters.
            max_new_tokens=160,
        )
    )
    observation = next(e for e in events if isinstance(e, ObservationEvent))
    # Constrained decoding guarantees a schema-valid call, not a sensible expression: the real tool ran on it.
    assert observation.call.name == "calculator" and observation.call.parse_error is None
    assert observation.message.content == dispatch_tool("calculator", observation.call.arguments).text
    assert [p.get("force_tool") for _, p in recording.prompts] == ["calculator", None]
    assert observation.message.content in recording.prompts[1][0]
    final = conversation[-1]
    assert final.role == "assistant" and final.content.strip() and final.meta["finish_reason"] in ("stop", "length")


class AllowAll:
    """A constraint that allows every token and never completes."""

    def mask(self, logits: torch.Tensor) -> None:
        pass

    def accept(self, token: int) -> bool:
        return False


@pytest.mark.model
def test_unconstrained_generation_is_unchanged(embedded_client):
    messages = [Message.user("Name three rivers.")]
    prompt = embedded_client.dialect.encode(messages)
    with torch.inference_mode():
        reference = embedded_client.engine.model.generate(
            torch.tensor([prompt]), max_new_tokens=16, min_new_tokens=16, do_sample=False, repetition_penalty=1.1
        )[0, len(prompt) :].tolist()
    events = embedded_client.stream(messages, temperature=0.0, max_new_tokens=16, repetition_penalty=1.1)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == embedded_client.dialect.decode(reference)
    # The constraint hook itself changes nothing (a constraint turns the repetition penalty off, so compare without).
    params = GenerationParams(temperature=0.0, max_new_tokens=16, repetition_penalty=1.0)
    plain = list(embedded_client.engine.generate(prompt, params, set()))
    assert list(embedded_client.engine.generate(prompt, params, set(), constraint=AllowAll())) == plain
