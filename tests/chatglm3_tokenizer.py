"""A tiny real ChatGLM3-style tokenizer for tests: a SentencePiece model trained in a second.

Trained like ChatGLM3's own (byte fallback, dummy prefix, whitespace kept exactly), so
newlines encode as `<0x0A>`, unseen characters (Chinese) as bytes, and `encode("\\n")`
is `▁`, `<0x0A>`, just as in the released tokenizer. ChatGLM3's special tokens go
after its vocabulary. `FakeChatGLMTokenizer` has the shape of the remote-code
`ChatGLMTokenizer` that the dialect reads (`.tokenizer.sp_model`, `get_command`).
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import sentencepiece as spm

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

_WORDS = ["the", "weather", "in", "Beijing", "is", "sunny", "today", "let me check"]
_LINES = [
    'tool_call(city_name="Beijing", unit="celsius")',
    "```python",
    "```result",
    "import numpy as np",
    "print(sum(range(10)))",
    '{"name": "get_weather", "description": "Get the weather", "parameters": {"type": "object"}}',
    "Answer the following questions as best as you can. You have access to the following tools:",
    "    indented line with     several spaces",
    "北京的天气怎么样？今天北京晴。",
]


def corpus_lines() -> list[str]:
    sentences = (" ".join(words) for words in itertools.permutations(_WORDS, 5))
    return _LINES * 20 + list(itertools.islice(sentences, 2000))


def train_sentencepiece(directory: Path, vocab_size: int = 400) -> spm.SentencePieceProcessor:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_lines()),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        split_digits=True,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    (directory / "tokenizer.model").write_bytes(model.getvalue())
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


class _SPTokenizer:
    def __init__(self, sp: spm.SentencePieceProcessor) -> None:
        self.sp_model = sp
        self.special_tokens = {token: sp.get_piece_size() + i for i, token in enumerate(SPECIAL_TOKENS)}


class ChatGLMTokenizer:
    """The attributes of the remote-code ChatGLM3 tokenizer that the dialect uses (same class name)."""

    def __init__(self, sp: spm.SentencePieceProcessor) -> None:
        self.tokenizer = _SPTokenizer(sp)

    def get_command(self, token: str) -> int:
        assert token in self.tokenizer.special_tokens, f"{token} is not a special token"
        return self.tokenizer.special_tokens[token]
