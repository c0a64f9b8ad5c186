"""Forced tool calls: constrained decoding, so even a tiny model writes a valid call.

With `force_tool` set, the engine masks every token that the grammar of a call
does not allow next. The grammar is the dialect's call syntax around one JSON
object, `{"name": <an allowed tool>, "arguments": <that tool's parameters schema>}`,
or a whole format of its own (CallSyntax.style: ChatGLM3's `tool_call(...)`, GLM-4.5's
`<arg_key>` pairs, GLM-4's name line); the dialect's parser then reads the finished
text like any call the model wrote.

xgrammar compiles the grammar against the tokenizer's vocabulary and fills a
token bitmask per step in C++: about 0.3 ms a token here, against about 190 ms for
lm-format-enforcer, which also let `minimum`/`maximum` through; every call xgrammar
finished validated (bench/bench_constrained.py). It is imported only when a call is
forced. Free strings are bounded (FREE_STRING), so a sampled string cannot run on
to max_new_tokens and leave the call cut off; required ones cannot be blank (REQUIRED_STRING).

Building and compiling a grammar runs in C++ that cannot be interrupted, and some
schemas take minutes ("pattern": "^a{40000}$" did not finish in 5 minutes). So it
runs in a worker process (`_CompileWorker`) that is killed when it overruns
COMPILE_BUDGET_S: the request fails with a GrammarError instead of hanging, and no
runaway thread keeps a core busy.
"""

from __future__ import annotations

import json
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Protocol

from glm_client.dialects.base import CallSyntax, ToolSchema, function_of, split_interpreter
from glm_client.messages import INTERPRETER

if TYPE_CHECKING:
    import torch
    import xgrammar

FORCE_ANY = "any"
# Every grammar failure starts so; the server answers those with a 400 (the tool schemas are the caller's).
GRAMMAR_ERROR_PREFIX = "The forced tool call's grammar"
# Compiling a typical tool set takes 0.01-0.3 s here, 1.5-4 s for the first plain-string one
# (it fills the vocabulary's masks) and under 1 s for a 5,000-value enum; 20 s is far above that.
COMPILE_BUDGET_S = 20.0
# Starting the worker (importing xgrammar) takes ~5 s on a busy 2-core machine; not part of the budget.
GRAMMAR_WORKER_START_TIMEOUT_S = 120.0
# Address space the worker may add after its imports: 128 forced string tools grew it by 7.9 GB
# before the time budget stopped it; a 2,000-value enum needs ~300 MB.
WORKER_MEMORY_BYTES = 2 * 1024**3
_CACHED_GRAMMARS = 32  # compiled grammars kept per model: a repeated tool set costs nothing


class GrammarError(ValueError):
    """The forced call's grammar could not be made from the tool schemas; the message starts GRAMMAR_ERROR_PREFIX."""


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
# A required free string starts with a non-space character, so it is never empty or blank: a small
# model forced to call calculator wrote {"expression": ""} every time. Same bounds otherwise; xgrammar
# ignores minLength next to a pattern, so the pattern says it.
REQUIRED_STRING = {"pattern": "^[^<>{}\\s][^<>{}\\n]{0,119}$"}
# JSON as json.dumps writes it, with no other whitespace (unbounded whitespace lets a sampling
# model wander off in newlines). Measured on the embedded model (bench/bench_forced_calls.py and
# tests/test_constrained.py): compact "," and ":" gave better calculator expressions, but nested
# objects and arrays ran on to max_new_tokens ("Bosch_Bosch_…", tags without end).
CALL_SEPARATORS = (", ", ": ")


def _bounded_strings(schema: Any, required: bool = False) -> Any:
    """A copy of `schema` whose unconstrained string types get FREE_STRING's limits (REQUIRED_STRING's if `required`)."""
    if isinstance(schema, list):
        return [_bounded_strings(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    bounded = {
        key: _bounded_strings(value) if key != "const" and key != "enum" else value for key, value in schema.items()
    }
    properties, names = schema.get("properties"), schema.get("required")
    if isinstance(properties, dict) and isinstance(names, list):
        bounded["properties"] = {name: _bounded_strings(value, name in names) for name, value in properties.items()}
    types = schema.get("type")
    is_string = types == "string" or (isinstance(types, list) and "string" in types)
    if is_string and not ({"enum", "const", "pattern", "format"} & schema.keys()):
        bounded = {**(REQUIRED_STRING if required else FREE_STRING), **bounded}
    return bounded


def grammar_spec(tools: list[ToolSchema], syntax: CallSyntax) -> dict[str, Any]:
    """What `build_grammar` needs, as plain data (it crosses to the worker process)."""
    if syntax.style != "json":
        return {"style": syntax.style, "tools": format_tools_spec(tools, syntax.style)}
    ordinary, interpreter = split_interpreter(tools) if syntax.code_fence else (tools, False)
    return {
        "style": "json",
        "schema": call_schema(ordinary) if ordinary else None,
        "open": syntax.open,
        "close": syntax.close,
        "code_fence": bool(interpreter),
        "separators": CALL_SEPARATORS,
    }


def call_grammar(tools: list[ToolSchema], syntax: CallSyntax) -> xgrammar.Grammar:
    """The grammar of one call to any of `tools`, written in `syntax` (built in this process: no budget)."""
    return build_grammar(grammar_spec(tools, syntax))


def build_grammar(spec: dict[str, Any]) -> xgrammar.Grammar:
    """The grammar of a `grammar_spec`; the worker process runs this same code (see _WORKER)."""
    import xgrammar as xgr

    def literal(text: str) -> xgrammar.Grammar:
        return xgr.Grammar.from_ebnf(f"root ::= {json.dumps(text, ensure_ascii=False)}")

    style = spec.get("style", "json")
    if style in ("chatglm3", "glm45"):
        return xgr.Grammar.from_ebnf(format_call_ebnf(style, spec["tools"]))
    if style == "glm4":  # the name on its own line, then the arguments as JSON
        calls = [
            xgr.Grammar.concat(
                literal(tool["name"] + "\n"),
                xgr.Grammar.from_json_schema(tool["parameters"], any_whitespace=False, separators=CALL_SEPARATORS),
            )
            for tool in spec["tools"]
        ]
        return calls[0] if len(calls) == 1 else xgr.Grammar.union(*calls)
    options = []
    if spec["schema"] is not None:
        separators = tuple(spec["separators"])
        arguments = xgr.Grammar.from_json_schema(spec["schema"], any_whitespace=False, separators=separators)
        options.append(xgr.Grammar.concat(literal(spec["open"]), arguments, literal(spec["close"])))
    if spec["code_fence"]:
        options.append(xgr.Grammar.from_ebnf(CODE_FENCE_EBNF))
    return options[0] if len(options) == 1 else xgr.Grammar.union(*options)


def format_tools_spec(tools: list[ToolSchema], style: str) -> list[dict[str, Any]]:
    """{name, parameters} per tool; JSON-argument formats get bounded strings, as call_schema gives them."""
    spec = []
    for tool in tools:
        function = function_of(tool)
        parameters = dict(function.get("parameters") or {"type": "object", "properties": {}})
        if style == "glm4" and function["name"] != INTERPRETER:
            parameters = _bounded_strings(parameters)
        spec.append({"name": function["name"], "parameters": parameters})
    return spec


def format_call_ebnf(style: str, tools: list[dict[str, Any]]) -> str:
    """The EBNF text of a call in a format whose grammar is written here rather than by xgrammar's JSON schemas."""
    if style == "chatglm3":
        from glm_client.dialects.chatglm3_grammar import chatglm3_call_ebnf

        return chatglm3_call_ebnf(tools)
    from glm_client.dialects.glm45_calls import glm45_call_ebnf

    return glm45_call_ebnf(tools)


def tokenizer_info(tokenizer: Any, vocab_size: int) -> xgrammar.TokenizerInfo:
    """xgrammar's view of the tokenizer; ChatGLM3's is built from its SentencePiece model here.

    xgrammar's own reading of the ChatGLM3 tokenizer takes `<|user|>` and friends for
    text; here they are special tokens, which no grammar allows.
    """
    import xgrammar as xgr

    from glm_client.dialects.chatglm3 import ChatGLM3Vocab, has_chatglm3_tokens

    if isinstance(tokenizer, ChatGLM3Vocab) or has_chatglm3_tokens(tokenizer):
        vocab = tokenizer if isinstance(tokenizer, ChatGLM3Vocab) else ChatGLM3Vocab.from_hf(tokenizer)
        return xgr.TokenizerInfo(
            vocab.grammar_pieces(),
            xgr.VocabType.BYTE_FALLBACK,
            vocab_size=vocab_size,
            stop_token_ids=[vocab.eos_id],
            add_prefix_space=True,
        )
    return xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)


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
    """Compiles forced-call grammars for one tokenizer, each within `budget_s` (COMPILE_BUDGET_S when None).

    Indexing the vocabulary takes a fraction of a second, so it is done once per
    model; compiled grammars are cached, so a repeated tool set costs nothing.
    """

    def __init__(self, tokenizer: Any, vocab_size: int, budget_s: float | None = None) -> None:
        try:
            import xgrammar as xgr
        except ImportError:
            raise ValueError("Forcing a tool call needs the xgrammar package: pip install xgrammar.") from None

        self.vocab_size = vocab_size
        self.budget_s = budget_s
        self._xgr = xgr
        self._worker = _CompileWorker()  # starts importing xgrammar while the vocabulary is indexed here
        self._info = tokenizer_info(tokenizer, vocab_size)
        self._info_json = self._info.serialize_json()
        self._cache: OrderedDict[str, xgrammar.CompiledGrammar] = OrderedDict()
        self._lock = threading.Lock()  # one worker, one compile at a time

    def constraint(self, tools: list[ToolSchema], syntax: CallSyntax) -> GrammarConstraint:
        """A fresh constraint for one reply that must call one of `tools`; raises GrammarError."""
        spec = grammar_spec(tools, syntax)
        key = json.dumps(spec, sort_keys=True, ensure_ascii=False)
        with self._lock:
            compiled = self._cache.get(key)
            if compiled is None:
                budget = COMPILE_BUDGET_S if self.budget_s is None else self.budget_s
                serialized = self._worker.compile(self._info_json, spec, budget)
                compiled = self._xgr.CompiledGrammar.deserialize_json(serialized, self._info)
                self._cache[key] = compiled
                while len(self._cache) > _CACHED_GRAMMARS:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(key)
        return GrammarConstraint(compiled, self.vocab_size)

    def clear_cache(self) -> None:
        """Forget every compiled grammar, here and in the worker: the next compile is cold (benchmarks)."""
        with self._lock:
            self._cache.clear()
            self._worker.clear_next = True

    def close(self) -> None:
        self._worker.stop()


# The worker: reads (tokenizer info JSON or None, grammar spec, clear cache) requests from stdin, answers
# ("ok", compiled grammar JSON) or ("error", message). Length-prefixed pickles both ways.
_WORKER = """
import pickle, struct, sys
sys.path.insert(0, sys.argv[1])
import resource
import xgrammar as xgr
from glm_client.constrained import build_grammar
# Past this the compiler's allocations fail (an error, or the worker dies): never the machine's memory.
size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (size + int(sys.argv[2]), resource.RLIM_INFINITY))
stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
def send(message):
    data = pickle.dumps(message)
    stdout.write(struct.pack("<Q", len(data)) + data)
    stdout.flush()
send(("ready", None))
compiler = None
while True:
    head = stdin.read(8)
    if len(head) < 8:
        break
    info_json, spec, clear = pickle.loads(stdin.read(struct.unpack("<Q", head)[0]))
    if compiler is None:
        compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.deserialize_json(info_json))
    elif clear:
        compiler.clear_cache()
    try:
        send(("ok", compiler.compile_grammar(build_grammar(spec)).serialize_json()))
    except Exception as error:
        send(("error", str(error)))
"""


class _CompileWorker:
    """A child process that builds and compiles grammars; killed (and later restarted) when one overruns."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self.clear_next = False  # ask the worker to drop its own compiled grammars first
        self._ready = False
        self._sent_info = False
        self._start()

    def _start(self) -> None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        # Importing xgrammar and glm_client takes seconds: once, at start, outside any budget.
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER, root, str(WORKER_MEMORY_BYTES)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._ready = False
        self._sent_info = False

    def compile(self, info_json: str, spec: dict[str, Any], budget_s: float) -> str:
        """The compiled grammar's JSON; raises GrammarError on a schema xgrammar refuses or past `budget_s`."""
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        assert self._proc is not None and self._proc.stdin is not None
        try:
            if not self._ready:
                self._receive(GRAMMAR_WORKER_START_TIMEOUT_S)
                self._ready = True
            request = pickle.dumps((None if self._sent_info else info_json, spec, self.clear_next))
            self.clear_next = False
            self._proc.stdin.write(struct.pack("<Q", len(request)) + request)
            self._proc.stdin.flush()
            self._sent_info = True
            status, payload = self._receive(budget_s)
        except TimeoutError:
            self.stop()
            raise GrammarError(
                f"{GRAMMAR_ERROR_PREFIX} took longer than {budget_s:g} s to build and was stopped; "
                "simplify the tool schemas (fewer enum values, shorter counted repetitions) or offer fewer tools."
            ) from None
        except (OSError, EOFError, pickle.UnpicklingError):
            self.stop()
            raise GrammarError(
                f"{GRAMMAR_ERROR_PREFIX} could not be built: the compiler ran out of its memory or failed; "
                "simplify the tool schemas or offer fewer tools."
            ) from None
        if status != "ok":  # xgrammar's message names the unsupported schema part
            raise GrammarError(f"{GRAMMAR_ERROR_PREFIX} could not be built from the tool schemas: {payload}")
        return payload

    def _receive(self, timeout_s: float) -> tuple[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        fd = self._proc.stdout.fileno()

        def read(count: int) -> bytes:
            data = bytearray()
            while len(data) < count:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    raise TimeoutError
                chunk = os.read(fd, count - len(data))
                if not chunk:
                    raise EOFError
                data += chunk
            return bytes(data)

        (size,) = struct.unpack("<Q", read(8))
        return pickle.loads(read(size))

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def __del__(self) -> None:
        self.stop()
