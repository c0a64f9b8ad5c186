"""Forced tool calls: xgrammar vs lm-format-enforcer on the embedded model, speed and validity.

    .venv/bin/python bench/bench_constrained.py [--samples 20] [--max-new-tokens 256]

Both libraries drive the same token loop (TransformersEngine.generate with a
constraint) on the same prompts: one greedy call per tool, then `--samples` calls
sampled at temperature 1.0 (seeds 0..n-1), named tool and "any" in turn, the two
libraries alternating so machine noise hits both alike. A call counts as valid when
the dialect's parser reads exactly one ToolCall, of an allowed tool, whose
arguments pass `jsonschema.validate` against that tool's parameters.

Figures: setup (once per model: indexing the vocabulary), compile (per request;
cold = a tool set not seen before), first mask, then the time the constraint adds
per token (mask + advance) and the decode speed with and without a constraint.
Validity: "invalid" counts finished calls that break their schema; "cut off" counts
calls still unfinished at max_new_tokens (a sampled string that never closes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from glm_client import LocalClient, Message, Settings, ToolCall, load_client
from glm_client.config import GenerationParams
from glm_client.constrained import TokenConstraint, ToolCallGrammars, call_schema
from glm_client.dialects.base import function_of

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "set_thermostat",
            "description": "Set the heating mode and target temperature.",
            "parameters": {
                "type": "object",
                "properties": {
                    "mode": {"type": "string", "enum": ["heat", "cool", "off"]},
                    "celsius": {"type": "integer", "minimum": 10, "maximum": 30},
                },
                "required": ["mode", "celsius"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "book_table",
            "description": "Book a restaurant table.",
            "parameters": {
                "type": "object",
                "properties": {
                    "guest": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "phone": {"type": "string"}},
                        "required": ["name"],
                    },
                    "people": {"type": "integer", "minimum": 1},
                    "time": {"type": "string"},
                },
                "required": ["guest", "people", "time"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "tag_photo",
            "description": "Attach tags to a photo.",
            "parameters": {
                "type": "object",
                "properties": {
                    "photo_id": {"type": "integer"},
                    "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
                },
                "required": ["photo_id", "tags"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "unit_convert",
            "description": "Convert a quantity between units.",
            "parameters": {
                "type": "object",
                "properties": {
                    "value": {"type": "number"},
                    "from_unit": {"type": "string"},
                    "to_unit": {"type": "string"},
                },
                "required": ["value", "from_unit", "to_unit"],
                "additionalProperties": False,
            },
        },
    },
]
QUESTIONS = {
    "set_thermostat": "It's freezing in here, warm the flat up to 22 degrees.",
    "book_table": "Book a table for 4 people at 8pm tonight, under the name Ana Lima.",
    "tag_photo": "Tag photo 1182 with beach and sunset.",
    "unit_convert": "How many kilometres is 26.2 miles?",
}


class Timed:
    """A constraint wrapper that adds up the time spent masking and advancing."""

    def __init__(self, inner: TokenConstraint) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.first_mask_s: float | None = None
        self.complete = False

    def mask(self, logits: torch.Tensor) -> None:
        start = time.perf_counter()
        self.inner.mask(logits)
        spent = time.perf_counter() - start
        self.first_mask_s = spent if self.first_mask_s is None else self.first_mask_s
        self.seconds += spent

    def accept(self, token: int) -> bool:
        start = time.perf_counter()
        self.complete = self.inner.accept(token)
        self.seconds += time.perf_counter() - start
        return self.complete


def engine_vocab_size(client: LocalClient) -> int:
    """Length of the engine's logits (engines that predate `vocab_size` have an HF model)."""
    return getattr(client.engine, "vocab_size", None) or client.engine.model.config.vocab_size


# --- the two libraries behind one interface -----------------------------------------------
class Xgrammar:
    name = "xgrammar"

    def __init__(self, client: LocalClient) -> None:
        vocab_size = engine_vocab_size(client)
        self.grammars = ToolCallGrammars(client.engine.tokenizer, vocab_size)
        self.syntax = client.dialect.call_syntax()

    def constraint(self, tools: list[dict[str, Any]], cold: bool) -> TokenConstraint:
        if cold:
            self.grammars.clear_cache()
        return self.grammars.constraint(tools, self.syntax)


class LmFormatEnforcer:
    name = "lm-format-enforcer"

    def __init__(self, client: LocalClient) -> None:
        from lmformatenforcer import TokenEnforcerTokenizerData

        tokenizer = client.engine.tokenizer
        self.vocab_size = engine_vocab_size(client)
        self.eos = tokenizer.eos_token_id
        # lmformatenforcer.integrations.transformers fails to import on transformers 5
        # (it wants transformers.tokenization_utils), so its tokenizer data is built here the same way.
        self.data = TokenEnforcerTokenizerData(
            _regular_tokens(tokenizer, self.vocab_size),
            lambda ids: tokenizer.decode(ids).rstrip("\ufffd"),
            self.eos,
            False,
            self.vocab_size,
        )
        self.syntax = client.dialect.call_syntax()

    def constraint(self, tools: list[dict[str, Any]], cold: bool) -> TokenConstraint:
        from lmformatenforcer import JsonSchemaParser, SequenceParser, StringParser

        parser = SequenceParser(
            [StringParser(self.syntax.open), JsonSchemaParser(call_schema(tools)), StringParser(self.syntax.close)]
        )
        return LmfeConstraint(self, parser)


def _regular_tokens(tokenizer: Any, vocab_size: int) -> list[tuple[int, str, bool]]:
    """lmformatenforcer's own recipe: (id, text after a "0", starts a word) for every non-special token."""
    zero = tokenizer.encode("0")[-1]
    special = set(tokenizer.all_special_ids)
    tokens = []
    for token_id in range(min(vocab_size, len(tokenizer))):
        if token_id in special:
            continue
        after_zero = tokenizer.decode([zero, token_id])[1:]
        tokens.append((token_id, after_zero, len(after_zero) > len(tokenizer.decode([token_id]))))
    return tokens


class LmfeConstraint:
    def __init__(self, library: LmFormatEnforcer, parser: Any) -> None:
        from lmformatenforcer import TokenEnforcer

        self.enforcer = TokenEnforcer(library.data, parser)
        self.eos = library.eos
        self.tokens: list[int] = []

    def mask(self, logits: torch.Tensor) -> None:
        allowed = torch.tensor(self.enforcer.get_allowed_tokens(self.tokens).allowed_tokens, dtype=torch.long)
        kept = logits[allowed]
        logits.fill_(float("-inf"))
        logits[allowed] = kept

    def accept(self, token: int) -> bool:
        self.tokens.append(token)
        # lm-format-enforcer says "complete" by allowing only the end-of-text token.
        return self.enforcer.get_allowed_tokens(self.tokens).allowed_tokens == [self.eos]


# --- one forced call ------------------------------------------------------------------------
@dataclass
class Result:
    valid: bool
    complete: bool  # the grammar finished within max_new_tokens
    problem: str
    tokens: int
    constraint_s: float
    decode_s: float
    compile_s: float
    first_mask_s: float


@dataclass
class Tally:
    results: list[Result] = field(default_factory=list)
    cold_compile_s: list[float] = field(default_factory=list)
    cached_compile_s: list[float] = field(default_factory=list)


def forced_call(
    client: LocalClient, library: Any, tool: dict[str, Any], force: str, params: GenerationParams, cold: bool
) -> Result:
    allowed = TOOLS if force == "any" else [tool]
    start = time.perf_counter()
    constraint = Timed(library.constraint(allowed, cold))
    compile_s = time.perf_counter() - start
    prompt = client.dialect.encode([Message.user(QUESTIONS[function_of(tool)["name"]])], TOOLS)
    ids: list[int] = []
    start = time.perf_counter()
    for token in client.engine.generate(prompt, params, set(client.dialect.stop_token_ids()), None, constraint):
        ids.append(token)
        if len(ids) == 1:
            start = time.perf_counter()  # decode speed from the first token on, like the client's timings
    decode_s = time.perf_counter() - start
    parser = client.dialect.new_parser(TOOLS)
    events = parser.feed(client.dialect.decode(ids)) + parser.finish()
    calls = [event for event in events if isinstance(event, ToolCall)]
    valid, problem = judge(calls, allowed, constraint.complete)
    if not constraint.complete:
        problem += f": {client.dialect.decode(ids)[:160]!r}…"
    return Result(
        valid,
        constraint.complete,
        problem,
        len(ids),
        constraint.seconds,
        decode_s,
        compile_s,
        constraint.first_mask_s or 0.0,
    )


def judge(calls: list[ToolCall], allowed: list[dict[str, Any]], complete: bool) -> tuple[bool, str]:
    if not complete:
        return False, "cut off at max_new_tokens"
    if len(calls) != 1 or calls[0].parse_error:
        return False, f"parsed as {calls!r}"
    schemas = {function_of(tool)["name"]: function_of(tool)["parameters"] for tool in allowed}
    if calls[0].name not in schemas:
        return False, f"called {calls[0].name!r}"
    try:
        jsonschema.validate(calls[0].arguments, schemas[calls[0].name])
    except jsonschema.ValidationError as error:
        return False, f"{calls[0].name} {calls[0].arguments}: {error.message}"
    return True, ""


def plain_decode_speed(client: LocalClient, tokens: int) -> float:
    """Unconstrained greedy tok/s for the same kind of prompt, for reference."""
    prompt = client.dialect.encode([Message.user(QUESTIONS["book_table"])], TOOLS)
    params = GenerationParams(temperature=0.0, max_new_tokens=tokens, repetition_penalty=1.0)
    stops: set[int] = set()  # run the full length
    count, start = 0, time.perf_counter()
    for _token in client.engine.generate(prompt, params, stops):
        count += 1
        if count == 1:
            start = time.perf_counter()
    return (count - 1) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    args = parser.parse_args()

    client = load_client(Settings.from_env())
    assert isinstance(client, LocalClient)
    print(
        f"model: {client.info.name} · {client.info.device} · {client.info.dtype} · torch threads {torch.get_num_threads()}"
    )

    libraries: list[Any] = []
    setup_s: dict[str, float] = {}
    for kind in (Xgrammar, LmFormatEnforcer):
        start = time.perf_counter()
        libraries.append(kind(client))
        setup_s[kind.name] = time.perf_counter() - start

    tallies = {library.name: (Tally(), Tally()) for library in libraries}  # (greedy, sampled)
    greedy = GenerationParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
    for index, tool in enumerate(TOOLS):
        for library in libraries:
            result = forced_call(client, library, tool, function_of(tool)["name"], greedy, cold=True)
            tallies[library.name][0].results.append(result)
            tallies[library.name][0].cold_compile_s.append(result.compile_s)
            start = time.perf_counter()
            library.constraint([tool], cold=False)  # the same tool set again
            tallies[library.name][0].cached_compile_s.append(time.perf_counter() - start)
            print(f"  greedy {index} {library.name:20} {'ok' if result.valid else 'INVALID ' + result.problem}")
    for seed in range(args.samples):
        tool = TOOLS[seed % len(TOOLS)]
        force = "any" if seed % 2 else function_of(tool)["name"]
        sampled = GenerationParams(
            temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=seed
        )
        for library in libraries if seed % 2 else reversed(libraries):
            result = forced_call(client, library, tool, force, sampled, cold=False)
            tallies[library.name][1].results.append(result)
            print(f"  sample {seed:2} {library.name:20} {'ok' if result.valid else 'INVALID ' + result.problem}")
    reference = plain_decode_speed(client, 64)

    print(
        f"\n{len(TOOLS)} greedy + {args.samples} sampled (T={args.temperature}, top_p={args.top_p}) forced calls per library, max {args.max_new_tokens} tokens"
    )
    header = (
        f"{'library':20} {'setup s':>8} {'compile ms':>11} {'cached ms':>10} {'1st mask ms':>12} "
        f"{'ms/token':>9} {'tok/s':>6} {'greedy ok':>10} {'sampled ok':>11} {'invalid':>8} {'cut off':>8}"
    )
    print(header)
    for library in libraries:
        greedy_tally, sampled_tally = tallies[library.name]
        everything = greedy_tally.results + sampled_tally.results
        per_token = sum(r.constraint_s for r in everything) / sum(r.tokens for r in everything)
        speed = statistics.median((r.tokens - 1) / r.decode_s for r in everything if r.tokens > 1)
        print(
            f"{library.name:20} {setup_s[library.name]:8.2f} "
            f"{statistics.median(greedy_tally.cold_compile_s) * 1000:11.1f} "
            f"{statistics.median(greedy_tally.cached_compile_s) * 1000:10.2f} "
            f"{statistics.median(r.first_mask_s for r in everything) * 1000:12.1f} "
            f"{per_token * 1000:9.2f} {speed:6.1f} "
            f"{sum(r.valid for r in greedy_tally.results):>7}/{len(greedy_tally.results):<2} "
            f"{sum(r.valid for r in sampled_tally.results):>8}/{len(sampled_tally.results):<2} "
            f"{sum(r.complete and not r.valid for r in everything):8} {sum(not r.complete for r in everything):8}"
        )
    print(f"{'(no constraint)':20} {'':8} {'':11} {'':10} {'':12} {'':9} {reference:6.1f}")


if __name__ == "__main__":
    main()
