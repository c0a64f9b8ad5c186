"""Forced ChatGLM3 calls: every string the grammar lets through is a schema-valid call.

The grammar is compiled against the tiny ChatGLM3 SentencePiece vocabulary and driven
with random allowed tokens (a fixed seed) until it ends; the text is decoded and read
by the ChatGLM3 parser like any reply, then validated with jsonschema.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import jsonschema
import pytest
import torch
import xgrammar as xgr
from chatglm3_tokenizer import ChatGLMTokenizer, train_sentencepiece

from glm_client import Done, LocalClient, Message, ToolCall
from glm_client.constrained import GrammarConstraint, call_grammar, tokenizer_info
from glm_client.dialects.base import INTERPRETER_TOOL
from glm_client.dialects.chatglm3 import ChatGLM3Dialect, ChatGLM3Vocab
from glm_client.engines.base import EngineInfo
from glm_client.events import Event, ToolCallProgress, ToolCallStart


def tool(name: str, properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    parameters = {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }
    return {"type": "function", "function": {"name": name, "description": name, "parameters": parameters}}


THERMOSTAT = tool(
    "set_thermostat",
    {
        "mode": {"type": "string", "enum": ["heat", "cool", "off"]},
        "celsius": {"type": "integer", "minimum": 5, "maximum": 30},
    },
)
ORDER = tool(
    "order_pizza",
    {
        "customer": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "floor": {"type": "integer"}, "vip": {"type": "boolean"}},
            "required": ["name", "floor"],
        },
        "size": {"type": "string", "enum": ["small", "large"]},
        "note": {"type": ["string", "null"]},
    },
    required=["customer", "size"],
)
TAGS = tool(
    "tag_photo",
    {
        "photo_id": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
        "weights": {"type": "array", "items": {"type": "number"}},
    },
)
CITY = tool(
    "get_weather",
    {
        "city_name": {"type": "string"},
        "unit": {"enum": ["摄氏度", "华氏度"]},
        "from": {"type": "string", "maxLength": 5},
    },
    required=["city_name", "unit"],
)
NOTHING_REQUIRED = tool("list_files", {"path": {"type": "string"}, "hidden": {"type": "boolean"}}, required=[])
SCHEMAS = [THERMOSTAT, ORDER, TAGS, CITY, NOTHING_REQUIRED]


@pytest.fixture(scope="module")
def sp(tmp_path_factory):
    return train_sentencepiece(tmp_path_factory.mktemp("chatglm3_forced"))


@pytest.fixture(scope="module")
def vocab(sp):
    return ChatGLM3Vocab.from_sentencepiece(sp)


@pytest.fixture(scope="module")
def compiler(vocab):
    return xgr.GrammarCompiler(tokenizer_info(vocab, len(vocab.grammar_pieces())))


def sample(compiler, vocab, tools, rng: random.Random, limit: int = 3000) -> list[int]:
    """Token ids a random model writes under the grammar: each step one of the allowed tokens."""
    dialect = ChatGLM3Dialect(vocab)
    size = len(vocab.grammar_pieces())
    matcher = xgr.GrammarMatcher(
        compiler.compile_grammar(call_grammar(tools, dialect.call_syntax())), terminate_without_stop_token=True
    )
    bitmask = xgr.allocate_token_bitmask(1, size)
    ids: list[int] = []
    while not matcher.is_terminated():
        assert len(ids) < limit, "the grammar did not end"
        matcher.fill_next_token_bitmask(bitmask)
        allowed = [i for i in range(size) if (int(bitmask[0, i // 32]) >> (i % 32)) & 1]
        assert allowed, "the grammar allows no token"
        ids.append(rng.choice(allowed))
        assert matcher.accept_token(ids[-1])
    return ids


def parse(vocab, tools, ids: list[int]) -> list[Event]:
    parser = ChatGLM3Dialect(vocab).new_parser(tools)
    return parser.feed(ChatGLM3Dialect(vocab).decode(ids)) + parser.finish()


def accepts(compiler, vocab, tools, text: str) -> bool:
    """Whether the grammar takes `text` (tokenized as the model would: metadata and content apart)."""
    metadata, _, content = text.partition("\n")
    ids = vocab.encode_text(metadata + "\n") + vocab.encode_text(content)
    matcher = xgr.GrammarMatcher(
        compiler.compile_grammar(call_grammar(tools, ChatGLM3Dialect(vocab).call_syntax())),
        terminate_without_stop_token=True,
    )
    return all(matcher.accept_token(i) for i in ids) and matcher.is_terminated()


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda t: t["function"]["name"])
def test_every_sampled_call_parses_into_a_schema_valid_call(compiler, vocab, schema):
    rng = random.Random(15)
    for _ in range(12):
        events = parse(vocab, [schema], sample(compiler, vocab, [schema], rng))
        calls = [event for event in events if isinstance(event, ToolCall)]
        assert len(calls) == 1 and calls[0].parse_error is None, (events, calls)
        assert events[0] == ToolCallStart(schema["function"]["name"])
        jsonschema.validate(calls[0].arguments, schema["function"]["parameters"])


def test_any_of_several_tools_names_one_of_them(compiler, vocab):
    rng, seen = random.Random(7), set()
    for _ in range(20):
        events = parse(vocab, SCHEMAS, sample(compiler, vocab, SCHEMAS, rng))
        (call,) = [event for event in events if isinstance(event, ToolCall)]
        parameters = next(t["function"]["parameters"] for t in SCHEMAS if t["function"]["name"] == call.name)
        jsonschema.validate(call.arguments, parameters)
        seen.add(call.name)
    assert len(seen) >= 3


def test_the_reference_spelling_is_accepted_and_a_missing_keyword_is_not(compiler, vocab):
    good = 'set_thermostat\n```python\ntool_call(mode="heat", celsius=21)\n```'
    assert accepts(compiler, vocab, [THERMOSTAT], good)
    assert not accepts(compiler, vocab, [THERMOSTAT], 'set_thermostat\n```python\ntool_call(mode="heat")\n```')
    assert not accepts(
        compiler, vocab, [THERMOSTAT], 'set_thermostat\n```python\ntool_call(mode="warm", celsius=21)\n```'
    )
    assert not accepts(
        compiler, vocab, [THERMOSTAT], 'set_thermostat\n```python\ntool_call(mode="heat", celsius=31)\n```'
    )
    assert not accepts(compiler, vocab, [THERMOSTAT], 'get_weather\n```python\ntool_call(mode="heat", celsius=21)\n```')
    city = 'get_weather\n```python\ntool_call(city_name="北京", unit="摄氏度", **{"from": "home"})\n```'
    assert accepts(compiler, vocab, [CITY], city)
    assert not accepts(compiler, vocab, [CITY], city.replace('"home"', '"far away"'))  # maxLength 5
    no_arguments = {"type": "function", "function": {"name": "now", "parameters": {}}}
    assert accepts(compiler, vocab, [no_arguments], "now\n```python\ntool_call()\n```")


def test_the_interpreter_writes_a_code_segment(compiler, vocab):
    code = "interpreter\n```python\nimport numpy as np\nprint(sum(range(10)))\n```"
    assert accepts(compiler, vocab, [INTERPRETER_TOOL, THERMOSTAT], code)
    assert not accepts(compiler, vocab, [INTERPRETER_TOOL], "interpreter\nprint(1)")
    assert not accepts(compiler, vocab, [THERMOSTAT], code)  # not offered, not allowed
    ids = vocab.encode_text("interpreter\n") + vocab.encode_text("```python\nprint(1)\n```")
    (call,) = [event for event in parse(vocab, [INTERPRETER_TOOL], ids) if isinstance(event, ToolCall)]
    assert call.name == "interpreter" and call.arguments == {"code": "print(1)"}


def test_role_and_control_tokens_are_never_allowed(compiler, vocab):
    matcher = xgr.GrammarMatcher(
        compiler.compile_grammar(call_grammar([CITY], ChatGLM3Dialect(vocab).call_syntax())),
        terminate_without_stop_token=True,
    )
    for i in vocab.encode_text("get_weather\n") + vocab.encode_text('```python\ntool_call(city_name="'):
        assert matcher.accept_token(i)
    bitmask = xgr.allocate_token_bitmask(1, len(vocab.grammar_pieces()))
    matcher.fill_next_token_bitmask(bitmask)  # inside a free string: almost any text goes
    refused = [*vocab.special_ids.values(), vocab.eos_id, vocab.sp.unk_id()]
    assert not any((int(bitmask[0, i // 32]) >> (i % 32)) & 1 for i in refused)


# --- through the client, as the pages and the API server use it ----------------------------------
class RandomEngine:
    """An engine with ChatGLM3's tokenizer that picks at random among the tokens the constraint allows."""

    def __init__(self, sp) -> None:
        self.tokenizer = ChatGLMTokenizer(sp)
        self.vocab_size = sp.get_piece_size() + 16  # padded logits, as real checkpoints have
        self.tokenizer_lock = threading.Lock()
        self.info = EngineInfo("tiny-chatglm3", "cpu", "float32", 4096, "chatglm")

    def generate(self, input_ids, params, stop_ids, cancel=None, constraint: GrammarConstraint | None = None):
        generator = torch.Generator().manual_seed(params.seed or 0)
        for _ in range(params.max_new_tokens):
            logits = torch.rand(self.vocab_size, generator=generator)
            if constraint is not None:
                constraint.mask(logits)
            token = int(torch.argmax(logits))
            yield token
            if constraint is not None and constraint.accept(token):
                return


@pytest.mark.parametrize("force", ["any", "tag_photo"])
def test_force_tool_makes_a_chatglm3_reply_a_valid_call(sp, force):
    engine = RandomEngine(sp)
    client = LocalClient(engine, ChatGLM3Dialect.from_hf_tokenizer(engine.tokenizer))
    events = list(client.stream([Message.user("hi")], SCHEMAS, force_tool=force, max_new_tokens=2000, seed=4))
    calls = [event for event in events if isinstance(event, ToolCall)]
    assert len(calls) == 1 and calls[0].parse_error is None
    assert force == "any" or calls[0].name == force
    parameters = next(t["function"]["parameters"] for t in SCHEMAS if t["function"]["name"] == calls[0].name)
    jsonschema.validate(calls[0].arguments, parameters)
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "tool_calls"


def test_a_call_being_written_reports_each_token_until_it_is_whole(sp):
    engine = RandomEngine(sp)
    client = LocalClient(engine, ChatGLM3Dialect.from_hf_tokenizer(engine.tokenizer))
    events = list(client.stream([Message.user("hi")], SCHEMAS, force_tool="tag_photo", max_new_tokens=2000, seed=4))
    start = next(i for i, event in enumerate(events) if isinstance(event, ToolCallStart))
    end = next(i for i, event in enumerate(events) if isinstance(event, ToolCall))
    between = events[start + 1 : end]
    assert between and all(isinstance(event, ToolCallProgress) for event in between)
    counts = [event.tokens for event in between]
    assert counts == sorted(set(counts))  # one count per token, growing
    assert not any(isinstance(event, ToolCallProgress) for event in events[end:])
    assert counts[-1] < events[-1].usage.completion_tokens  # the call's tokens, not the whole reply's


def test_a_schema_that_refers_to_itself_is_refused_with_a_sentence(vocab):
    node = {"type": "object", "properties": {"child": {"$ref": "#/$defs/node"}}, "required": ["child"]}
    looping = tool("walk", {"root": {"$ref": "#/$defs/node"}})
    looping["function"]["parameters"]["$defs"] = {"node": node}
    with pytest.raises(ValueError, match="refers to itself"):
        call_grammar([looping], ChatGLM3Dialect(vocab).call_syntax())
