"""The ChatGLM3 dialect: its native prompt format, built id by id, and its reply parser.

Every prompt is `[gMASK]sop`, then per message a role token, the text
`{metadata}\\n` and the content, then a bare `<|assistant|>`. Role tokens are
inserted as ids and text goes through the raw SentencePiece model, so text that
spells `<|user|>` stays text. The metadata line and the content are encoded in two
calls, as the reference tokenizer does, which decides the exact ids (each part gets
its own dummy-prefix `▁`). Earlier tool calls are replayed with their metadata, so
the model sees its own calls exactly as it wrote them. See CHATGLM3_FORMAT.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from sentencepiece import SentencePieceProcessor

from glm_client.dialects.base import CallSyntax, OutputParser, ToolSchema, function_of, split_interpreter
from glm_client.dialects.chatglm3_parser import ChatGLM3Parser, render_tool_call
from glm_client.dialects.code_fences import CodeFences
from glm_client.messages import INTERPRETER, Message, ToolCall

# Appended after the SentencePiece vocabulary, in this order.
SPECIAL_TOKENS = (
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "sop",
    "eop",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
)

# The system prompts the reference demo uses for tool mode and code-interpreter mode.
TOOL_SYSTEM_PROMPT = "Answer the following questions as best as you can. You have access to the following tools:"
INTERPRETER_SYSTEM_PROMPT = (
    "你是一位智能AI助手，你叫ChatGLM3，你连接着一台电脑，但请注意不能联网。在使用Python解决任务时，你可以运行代码并得到结果，"
    "如果运行结果有错误，你需要尽可能对代码进行改进。你可以处理用户上传到电脑上的文件，文件默认存储路径是/mnt/data/。"
)


class ChatGLM3Vocab:
    """ChatGLM3's SentencePiece model plus the ids of the special tokens appended after it.

    Built from the real remote-code tokenizer with `from_hf`, or from any
    SentencePiece model with `from_sentencepiece` (tests use a tiny one).
    """

    def __init__(self, sp: SentencePieceProcessor, special_ids: Mapping[str, int]) -> None:
        missing = [token for token in SPECIAL_TOKENS if token not in special_ids]
        if missing:
            raise ValueError(f"Not a ChatGLM3 vocabulary: no id for {', '.join(missing)}.")
        if any(token_id < sp.get_piece_size() for token_id in special_ids.values()):
            raise ValueError("Not a ChatGLM3 vocabulary: special-token ids must come after the SentencePiece pieces.")
        self.sp = sp
        self.special_ids = dict(special_ids)
        self._special_by_id = {token_id: token for token, token_id in self.special_ids.items()}

    @classmethod
    def from_sentencepiece(cls, sp: SentencePieceProcessor) -> ChatGLM3Vocab:
        first = sp.get_piece_size()
        return cls(sp, {token: first + offset for offset, token in enumerate(SPECIAL_TOKENS)})

    @classmethod
    def from_hf(cls, tokenizer: Any) -> ChatGLM3Vocab:
        """From the ChatGLM3 tokenizer (`AutoTokenizer.from_pretrained(path, trust_remote_code=True)`)."""
        sp = _sentencepiece_of(tokenizer)
        try:
            lookup = getattr(tokenizer, "get_command", None) or tokenizer.convert_tokens_to_ids
            special_ids = {token: int(lookup(token)) for token in SPECIAL_TOKENS}
        except Exception as error:  # ChatGLM2's get_command asserts on the tokens it lacks
            raise ValueError(f"{type(tokenizer).__name__} is not a ChatGLM3 tokenizer ({error}).") from None
        return cls(sp, special_ids)

    @property
    def eos_id(self) -> int:
        return self.sp.eos_id()

    def id_of(self, special_token: str) -> int:
        return self.special_ids[special_token]

    def encode_text(self, text: str) -> list[int]:
        """Plain text through SentencePiece alone: nothing here can become a special token."""
        return self.sp.encode(text)

    def grammar_pieces(self) -> list[str]:
        """Each id's piece for xgrammar (byte-fallback, `▁` for space); "" marks control and special ids.

        xgrammar treats "" as a special token that no grammar allows, so `<|user|>` or
        `</s>` is never written as text inside a forced call.
        """
        pieces = [
            "" if self.sp.is_control(i) or self.sp.is_unknown(i) else self.sp.id_to_piece(i)
            for i in range(self.sp.get_piece_size())
        ]
        return pieces + [""] * (max(self.special_ids.values()) + 1 - len(pieces))

    def decode(self, ids: list[int]) -> str:
        """Like the reference tokenizer: special tokens by name, runs of other ids through SentencePiece."""
        parts: list[str] = []
        run: list[int] = []
        for token_id in ids:
            if token_id in self._special_by_id:
                parts += [self.sp.decode(run), self._special_by_id[token_id]]
                run = []
            else:
                run.append(token_id)
        parts.append(self.sp.decode(run))
        return "".join(parts)


def _sentencepiece_of(tokenizer: Any) -> SentencePieceProcessor:
    sp = getattr(getattr(tokenizer, "tokenizer", None), "sp_model", None)
    if sp is not None:
        return sp
    vocab_file = getattr(tokenizer, "vocab_file", None)
    if vocab_file:
        return SentencePieceProcessor(model_file=str(vocab_file))
    raise ValueError(
        f"{type(tokenizer).__name__} has no SentencePiece model; ChatGLM3 needs its remote-code tokenizer."
    )


class PromptMessage(NamedTuple):
    """One message as the format lays it out: `<|role|>{metadata}\\n{content}`."""

    role: str
    metadata: str
    content: str


class ChatGLM3Dialect:
    name = "chatglm3"

    def __init__(self, tokenizer: ChatGLM3Vocab | Any) -> None:
        """`tokenizer`: a ChatGLM3Vocab, or the Hugging Face ChatGLM3 tokenizer itself."""
        self.vocab = tokenizer if isinstance(tokenizer, ChatGLM3Vocab) else ChatGLM3Vocab.from_hf(tokenizer)

    @classmethod
    def from_hf_tokenizer(cls, tokenizer: Any) -> ChatGLM3Dialect:
        return cls(ChatGLM3Vocab.from_hf(tokenizer))

    def encode(self, messages: list[Message], tools: list[ToolSchema] | None = None) -> list[int]:
        ids = [self.vocab.id_of("[gMASK]"), self.vocab.id_of("sop")]
        for message in prompt_messages(messages, tools):
            ids += self._encode_message(message)
        return [*ids, self.vocab.id_of("<|assistant|>")]

    def _encode_message(self, message: PromptMessage) -> list[int]:
        # Two SentencePiece calls, as in the reference: the content never merges with the newline.
        return [
            self.vocab.id_of(f"<|{message.role}|>"),
            *self.vocab.encode_text(f"{message.metadata}\n"),
            *self.vocab.encode_text(message.content),
        ]

    def stop_token_ids(self) -> list[int]:
        return [self.vocab.eos_id, self.vocab.id_of("<|user|>"), self.vocab.id_of("<|observation|>")]

    def decode(self, ids: list[int]) -> str:
        """Reply text with `<|assistant|>` spelled out between segments, as ChatGLM3Parser expects.

        Like the reference, a content part keeps the space of its dummy-prefix `▁`
        ("\\n Hello"); the parser drops it. Decoding a window of ids instead of the
        whole reply shifts no text, so an incremental decoder can diff windows.
        """
        return self.vocab.decode(ids)

    def prompt_text(self, ids: list[int]) -> str:
        return self.vocab.decode(ids)  # special tokens come out by name: [gMASK]sop<|system|>…

    def new_parser(self, tools: list[ToolSchema] | None = None) -> OutputParser:
        parser = ChatGLM3Parser(tools)
        return CodeFences(parser) if split_interpreter(tools)[1] else parser

    def call_syntax(self) -> CallSyntax:
        """A metadata line and a fenced `tool_call(...)` (chatglm3_grammar.py); the interpreter writes code."""
        return CallSyntax(style="chatglm3")


# --- prompt layout ---------------------------------------------------------------------
def prompt_messages(messages: list[Message], tools: list[ToolSchema] | None = None) -> list[PromptMessage]:
    """The conversation as ChatGLM3 messages, tools appended to the (first) system message."""
    ordinary, interpreter = split_interpreter(tools)
    laid_out = [part for message in messages for part in _lay_out(message)]
    system_index = next((i for i, part in enumerate(laid_out) if part.role == "system"), None)
    if system_index is None and (ordinary or interpreter):
        # The interpreter needs no schema: the model calls it through its own `interpreter` metadata.
        laid_out.insert(0, PromptMessage("system", "", TOOL_SYSTEM_PROMPT if ordinary else INTERPRETER_SYSTEM_PROMPT))
        system_index = 0
    if ordinary and system_index is not None:
        system = laid_out[system_index]
        laid_out[system_index] = system._replace(content=f"{system.content}\n{tools_json(ordinary)}")
    return laid_out


def tools_json(tools: list[ToolSchema]) -> str:
    functions = [function_of(tool) for tool in tools]
    listed = [
        {"name": f["name"], "description": f.get("description", ""), "parameters": f.get("parameters", {})}
        for f in functions
    ]
    return json.dumps(listed, indent=4, ensure_ascii=False)


def _lay_out(message: Message) -> list[PromptMessage]:
    if message.role == "assistant":
        return _assistant_parts(message)
    if message.role == "observation":
        return [PromptMessage("observation", "", observation_text(message))]
    return [PromptMessage(message.role, "", message.content)]


def _assistant_parts(message: Message) -> list[PromptMessage]:
    """Prose first (if any), then one segment per call, each with its tool name as metadata."""
    if not message.tool_calls:
        return [PromptMessage("assistant", "", message.content)]
    prose = [PromptMessage("assistant", "", message.content)] if message.content else []
    return prose + [call_segment(call) for call in message.tool_calls]


def call_segment(call: ToolCall) -> PromptMessage:
    """A call as the model wrote it (`raw`), or rendered the way it writes calls."""
    metadata, newline, content = (call.raw or "").partition("\n")
    if newline and metadata.strip() == call.name:
        return PromptMessage("assistant", metadata, content)
    if call.is_interpreter:
        return PromptMessage("assistant", INTERPRETER, f"```python\n{call.code}\n```")
    return PromptMessage("assistant", call.name, f"```python\n{render_tool_call(call.arguments)}\n```")


def observation_text(message: Message) -> str:
    """What the model reads for a result; code results in a ```result block, as the reference does."""
    text = message.model_text()
    if message.name == INTERPRETER and not text.startswith("```"):
        return f"```result\n{text}\n```"
    return text


# --- auto-selection ---------------------------------------------------------------------
def is_chatglm3(config_or_tokenizer: Any) -> bool:
    """Whether a model config (or config.json dict) or a tokenizer is ChatGLM3's.

    A config says model_type "chatglm", which ChatGLM2 and the remote-code GLM-4
    share; a tokenizer is decisive, so prefer passing the tokenizer.
    """
    if isinstance(config_or_tokenizer, Mapping):
        return config_or_tokenizer.get("model_type") == "chatglm"
    if getattr(config_or_tokenizer, "model_type", None) == "chatglm":
        return True
    return has_chatglm3_tokens(config_or_tokenizer)


def has_chatglm3_tokens(tokenizer: Any) -> bool:
    # "sop" rules out GLM-4 (whose token is "<sop>"); "<|observation|>" rules out ChatGLM2.
    wanted = ("[gMASK]", "sop", "<|observation|>")
    try:
        if callable(getattr(tokenizer, "get_command", None)):
            return all(isinstance(tokenizer.get_command(token), int) for token in wanted)
        if callable(getattr(tokenizer, "get_vocab", None)):
            vocab = tokenizer.get_vocab()
            return all(token in vocab for token in wanted)
    except Exception:  # remote-code tokenizers assert or raise KeyError on unknown tokens
        return False
    return False
