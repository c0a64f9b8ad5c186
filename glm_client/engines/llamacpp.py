"""An optional engine on llama.cpp (llama-cpp-python) for GGUF files, the embedded model's included.

On a CPU llama.cpp decodes faster than anything transformers offers (bench/bench_engine.py),
so with `ENGINE=auto` the workbench uses it when `llama_cpp` imports. It is not a
requirement: `make bench-deps` builds it (about 10 minutes).

Only llama.cpp's forward pass is used, through its C API: one context holds the KV
cells of several sequences (`n_seq_max`), a forward is one `llama_decode` over rows of
several sequences, and the logits come back to the same sampling, prompt cache,
batching and constrained decoding as the transformers engine (decoding.py). Prompts
are tokenized by the model's Hugging Face tokenizer, as the dialects need; its ids
are the GGUF vocabulary's.
"""

from __future__ import annotations

import atexit
import ctypes
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from glm_client.config import GenerationParams
from glm_client.engines.base import MAX_AUTO_CONTEXT, EngineInfo, ModelLoadError, Progress
from glm_client.engines.decoding import PREFILL_CHUNK, Row, SequenceDecoder
from glm_client.engines.prompt_cache import PromptCache

if TYPE_CHECKING:
    from glm_client.constrained import TokenConstraint

# Sequences one context can hold: those decoding now plus those kept for their prefix.
MAX_SEQUENCES = 16
# Finished sequences kept for prefix reuse; they share the context's KV cells with the live ones.
PROMPT_CACHE_ENTRIES = 8
# Tokens per llama_decode call (one prefill chunk and a decode step of every other sequence); larger steps are split.
DECODE_BATCH = PREFILL_CHUNK + MAX_SEQUENCES
SUCCESS, NO_KV_SLOT = 0, 1  # llama_decode's return values we act on


def available() -> bool:
    """True when llama-cpp-python is installed (it is optional)."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


class LlamaSequence:
    """One sequence's KV cells in a llama.cpp context."""

    copyable = False

    def __init__(self, model: LlamaCppModel, seq_id: int) -> None:
        self.model = model
        self.seq_id = seq_id
        self.length = 0

    def truncate(self, length: int) -> None:
        if length < self.length:
            self.model.remove(self.seq_id, length)
            self.length = length

    def copy_prefix(self, length: int) -> None:
        """Not copied: a sequence is one of the context's few slots, so the prompt cache takes it instead."""
        return None

    def release(self) -> None:
        if self.seq_id >= 0:
            self.model.free(self.seq_id)
            self.seq_id, self.length = -1, 0

    def nbytes(self) -> int:
        return self.length * self.model.kv_bytes_per_token


class LlamaCppModel:
    """A GGUF model and one llama.cpp context; `forward` runs rows of several sequences at once."""

    def __init__(self, path: Path, context_length: int, threads: int) -> None:
        import llama_cpp

        self._lock = threading.Lock()  # a llama_context is not thread-safe
        self._context = self._model = None  # set first: close() runs even when loading fails
        self._api = llama_cpp
        _quiet_logs(llama_cpp)
        llama_cpp.llama_backend_init()
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), llama_cpp.llama_model_default_params())
        if not self._model:
            raise ModelLoadError(f"Could not load the model at {str(path)!r}: llama.cpp cannot read it as GGUF.")
        trained = llama_cpp.llama_model_n_ctx_train(self._model)
        self.context_length = context_length or min(trained, MAX_AUTO_CONTEXT)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.context_length
        params.n_batch = params.n_ubatch = DECODE_BATCH
        params.n_seq_max = MAX_SEQUENCES
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = True  # all sequences share the context's cells, so one chat can use all of them
        self._context = llama_cpp.llama_init_from_model(self._model, params)
        if not self._context:
            llama_cpp.llama_model_free(self._model)
            self._model = None
            raise ModelLoadError(f"llama.cpp could not create a {self.context_length}-token context.")
        self._memory = llama_cpp.llama_get_memory(self._context)
        self.vocab_size = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self._model))
        layers = llama_cpp.llama_model_n_layer(self._model)
        kv_width = llama_cpp.llama_model_n_embd(self._model) // llama_cpp.llama_model_n_head(self._model)
        kv_width *= llama_cpp.llama_model_n_head_kv(self._model)
        self.kv_bytes_per_token = 2 * layers * kv_width * 2  # keys and values, f16
        self._batch = llama_cpp.llama_batch_init(DECODE_BATCH, 0, 1)
        self._free_ids = list(range(MAX_SEQUENCES))
        self.evict: Callable[[], bool] = lambda: False  # frees a kept sequence; set by the engine

    def new_cache(self, limit: int) -> LlamaSequence:
        while True:
            with self._lock:
                if self._free_ids:
                    return LlamaSequence(self, self._free_ids.pop())
            if not self.evict():
                raise RuntimeError(f"llama.cpp is already running {MAX_SEQUENCES} sequences; try again shortly.")

    def remove(self, seq_id: int, start: int) -> None:
        """Forget the sequence's tokens from position `start` on."""
        with self._lock:
            if self._context:
                self._api.llama_memory_seq_rm(self._memory, seq_id, start, -1)

    def free(self, seq_id: int) -> None:
        with self._lock:
            if self._context:
                self._api.llama_memory_seq_rm(self._memory, seq_id, 0, -1)
            self._free_ids.append(seq_id)

    def forward(self, rows: list[Row[LlamaSequence]]) -> torch.Tensor:
        """Append each row's ids to its sequence; the logits after each row's last id, [rows, vocab]."""
        logits: list[np.ndarray] = []
        group: list[Row[LlamaSequence]] = []
        for row in rows:
            if group and sum(len(r.ids) for r in group) + len(row.ids) > DECODE_BATCH:
                logits += self._decode(group)
                group = []
            group.append(row)
        logits += self._decode(group)
        return torch.from_numpy(np.stack(logits))

    def _decode(self, rows: list[Row[LlamaSequence]]) -> list[np.ndarray]:
        batch = self._batch
        ends = []
        index = 0
        for row in rows:
            for offset, token in enumerate(row.ids):
                batch.token[index] = token
                batch.pos[index] = row.cache.length + offset
                batch.n_seq_id[index] = 1
                batch.seq_id[index][0] = row.cache.seq_id
                batch.logits[index] = offset == len(row.ids) - 1
                index += 1
            ends.append(index - 1)
        batch.n_tokens = index
        with self._lock:
            if not self._context:
                raise RuntimeError("The llama.cpp model is closed.")
            status = self._api.llama_decode(self._context, batch)
        while status == NO_KV_SLOT and self.evict():  # the context is full: drop a kept prefix and retry
            with self._lock:
                status = self._api.llama_decode(self._context, batch)
        if status == NO_KV_SLOT:
            raise RuntimeError(f"llama.cpp's {self.context_length}-token context is full; start a new chat.")
        if status != SUCCESS:
            raise RuntimeError(f"llama.cpp failed to decode (status {status}).")
        for row in rows:
            row.cache.length += len(row.ids)
        return [
            np.ctypeslib.as_array(self._api.llama_get_logits_ith(self._context, end), shape=(self.vocab_size,)).copy()
            for end in ends
        ]

    def close(self) -> None:
        with self._lock:  # waits for a decode in progress on the decode thread
            if self._context:
                self._api.llama_batch_free(self._batch)
                self._api.llama_free(self._context)
                self._api.llama_model_free(self._model)
                self._context = self._model = None

    def __del__(self) -> None:
        self.close()


class LlamaCppEngine:
    """An `Engine` (base.py) on llama.cpp: its forward, with the same decode thread as the packed path."""

    def __init__(self, model: LlamaCppModel, tokenizer: Any, info: EngineInfo) -> None:
        self.llama = model
        self.tokenizer = tokenizer
        self.tokenizer_lock = threading.Lock()  # Rust tokenizers refuse concurrent use
        self.info = info
        self.vocab_size = model.vocab_size
        # Kept sequences are bounded by count; their cells come out of the shared context.
        self.prompt_cache = PromptCache(PROMPT_CACHE_ENTRIES, max_bytes=1 << 62)
        model.evict = self.prompt_cache.evict_oldest
        self.decoder = SequenceDecoder(model, model.context_length, self.prompt_cache)
        _open_engines.add(self)

    def close(self) -> None:
        """Stop decoding, then free the model."""
        self.decoder.close()
        self.llama.close()

    @classmethod
    def load(
        cls,
        gguf: str | Path,
        *,
        tokenizer_dir: str | Path | None = None,
        name: str | None = None,
        context_length: int = 0,
        progress: Progress = lambda _message: None,
    ) -> LlamaCppEngine:
        """Load a .gguf file; the tokenizer comes from `tokenizer_dir` or else from the GGUF itself."""
        from transformers import AutoTokenizer

        gguf = Path(gguf).expanduser()
        if gguf.suffix != ".gguf" or not gguf.is_file():
            raise ModelLoadError(f"{str(gguf)!r} is not a .gguf file.")
        progress(f"Loading {gguf.name} with llama.cpp…")
        try:
            if tokenizer_dir is not None:
                tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
            else:
                tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except Exception as error:  # transformers raises many kinds; the user needs one sentence
            raise ModelLoadError(
                f"Could not load the model at {str(gguf)!r}: {type(error).__name__}: {error}"
            ) from error
        model = LlamaCppModel(gguf, context_length, threads=torch.get_num_threads())
        info = EngineInfo(
            name=name or gguf.name,
            device="cpu",
            dtype="gguf",
            context_length=model.context_length,
            model_type="gguf",
        )
        return cls(model, tokenizer, info)

    def generate(
        self,
        input_ids: list[int],
        params: GenerationParams,
        stop_ids: set[int],
        cancel: threading.Event | None = None,
        constraint: TokenConstraint | None = None,
    ) -> Iterator[int]:
        """`Engine.generate`, on the decode thread."""
        return self.decoder.generate(input_ids, params, stop_ids, cancel, constraint)


# Engines still open at exit are closed before the interpreter tears down: freed later, by
# the final garbage collection, llama.cpp aborted the process ("terminate called …").
_open_engines: weakref.WeakSet[LlamaCppEngine] = weakref.WeakSet()


@atexit.register
def _close_open_engines() -> None:
    for engine in list(_open_engines):
        engine.close()


_log_callback: Any = None  # the C side keeps a pointer to it: it must live as long as the process


def _quiet_logs(llama_cpp: Any) -> None:
    """llama.cpp logs every load to stderr; keep only its errors."""
    global _log_callback
    if _log_callback is not None:
        return
    error_level = 3  # GGML_LOG_LEVEL_ERROR

    @llama_cpp.llama_log_callback
    def log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        if level == error_level:
            import sys

            print(text.decode("utf-8", "replace"), end="", file=sys.stderr)

    _log_callback = log
    llama_cpp.llama_log_set(log, ctypes.c_void_p(0))
