"""What every token engine shares: the `Engine` protocol `LocalClient` drives, and its types.

An engine is a local model at the level of token ids: a prompt's ids in, the reply's
ids out, one at a time. Everything above ids (prompt layout, output parsing, stop
strings, context trimming) is the dialect's and `LocalClient`'s. A model behind a
server is not an engine but a whole `Client` (glm_client/remote/).

This module imports no torch, so the loader's types are cheap to import.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from glm_client.config import GenerationParams

if TYPE_CHECKING:
    from glm_client.constrained import TokenConstraint

# Beyond this the KV cache of a long chat would eat a laptop's memory; CONTEXT_LENGTH overrides.
MAX_AUTO_CONTEXT = 32768

Progress = Callable[[str], None]


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message is one readable sentence."""


@dataclass(frozen=True)
class EngineInfo:
    name: str
    device: str
    dtype: str
    context_length: int
    model_type: str
    weights: str = ""  # how the weights are stored when not simply in `dtype`, e.g. "int4"


@runtime_checkable
class Engine(Protocol):
    """A loaded model and its tokenizer; `generate` yields token ids.

    Implemented by TransformersEngine (transformers.py) and LlamaCppEngine (llamacpp.py).
    """

    info: EngineInfo
    tokenizer: Any  # the model's Hugging Face tokenizer: the dialects encode and decode with it
    tokenizer_lock: threading.Lock  # held around every tokenizer call: Rust tokenizers refuse concurrent use

    @property
    def vocab_size(self) -> int:
        """Length of a logits vector (forced tool calls build their token masks for it)."""
        ...

    def generate(
        self,
        input_ids: list[int],
        params: GenerationParams,
        stop_ids: set[int],
        cancel: threading.Event | None = None,
        constraint: TokenConstraint | None = None,
    ) -> Iterator[int]:
        """Yield new token ids until a stop id, max_new_tokens, or `cancel` is set.

        A `constraint` (a forced tool call) masks the logits before each pick, greedy
        or sampled alike, and ends the reply when its text is complete.
        """
        ...
