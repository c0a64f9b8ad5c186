"""Local engine on Hugging Face transformers: loading, devices, dtypes, and a token loop.

The decode loop is our own rather than `model.generate` with a streamer thread:
it yields each token from the caller's thread (streaming costs nothing: the same
speed as `generate`, bench/bench_engine.py's bf16 row), checks the cancel flag between tokens (stop frees the
CPU within one token), and holds a lock only around each forward pass (several
sessions share one model and take turns token by token).

On CPU, a Llama-family model (the embedded SmolLM2 included) runs instead through
the packed fast path (fast_llama.py, decoding.py): int4/int8 weights, a prompt cache
and batched decoding of concurrent sessions, about 4x the speed of this loop
(bench/bench_engine.py). This loop stays the reference it is tested against, and
serves every other model and device.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from glm_client.config import DEFAULT_PROMPT_CACHE_MB, GenerationParams
from glm_client.engines.base import MAX_AUTO_CONTEXT, EngineInfo, ModelLoadError, Progress
from glm_client.engines.decoding import SequenceDecoder
from glm_client.engines.fast_llama import DENSE_MIN_TOKENS, FastLlama, unsupported_reason
from glm_client.engines.prompt_cache import PromptCache
from glm_client.engines.sampling import TokenPicker
from glm_client.engines.thread_tuner import ThreadTuner

if TYPE_CHECKING:
    from glm_client.constrained import TokenConstraint

# Finished sequences kept for prefix reuse (their memory together is PROMPT_CACHE_MB). 32: 8 users
# with a conversation in each of the three modes find theirs again (with 4, a Code Interpreter
# round's prefix was gone by the next round under load, and its whole prompt ran again).
PROMPT_CACHE_ENTRIES = 32
# QUANTIZE on the packed path → bits of the layers' weights and of the output head. The head
# stays int8: in int4 it cost the embedded model 7% perplexity, int8 under 1% (bench_engine.py).
PACKED_BITS = {"none": (16, 16), "8": (8, 8), "4": (4, 8)}


def token_pieces(tokenizer: Any, vocab_size: int) -> list[str | None]:
    """Each id's text in the tokenizer's own alphabet, None for special and added ids; [] if it cannot tell."""
    try:
        pieces: list[str | None] = list(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
        special = {*tokenizer.all_special_ids, *getattr(tokenizer, "added_tokens_decoder", {})}
    except Exception:  # a remote-code tokenizer without these: its prompts are not aligned
        return []
    for index in special:
        if 0 <= index < len(pieces):
            pieces[index] = None
    return pieces + [None] * (vocab_size - len(pieces))


def default_prompt_cache(max_mb: int = DEFAULT_PROMPT_CACHE_MB) -> PromptCache:
    # A prompt's last chunk runs dense, as it did when the prompt was new (fast_llama.py).
    return PromptCache(PROMPT_CACHE_ENTRIES, max_mb << 20, replay=DENSE_MIN_TOKENS)


def pick_device(requested: str) -> str:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("DEVICE=cuda was requested but no CUDA GPU is available; use DEVICE=cpu or auto.")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def pick_dtype(requested: str, device: str) -> torch.dtype:
    """bf16 by default: on this 2-core CPU it decodes ~1.5x faster than fp32 (measured with generate)."""
    if requested != "auto":
        return getattr(torch, requested)
    if device == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def read_model_config(path: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"{path} is not a model directory: config.json is missing or unreadable ({error})."
        ) from None


class TransformersEngine:
    """An `Engine` (base.py) on one loaded causal LM and its tokenizer.

    With `fast` (the model's packed CPU path) tokens come from it, with a prompt cache
    and batched steps; without, from the reference loop over the model's own forward.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        info: EngineInfo,
        fast: FastLlama | None = None,
        prompt_cache: PromptCache | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.info = info
        self.device = torch.device(info.device)
        self._forward_lock = threading.Lock()
        self.tokenizer_lock = threading.Lock()  # Rust tokenizers refuse concurrent use ("Already borrowed")
        self.fast = fast
        self.prompt_cache: PromptCache | None = None
        self.decoder: SequenceDecoder | None = None
        if fast is not None:
            self.prompt_cache = prompt_cache if prompt_cache is not None else default_prompt_cache()
            self.decoder = SequenceDecoder(
                fast, info.context_length, self.prompt_cache, ThreadTuner(), self._own_spelling
            )
        self._pieces = token_pieces(tokenizer, self.vocab_size) if fast is not None else []

    def _own_spelling(self, ids: list[int]) -> list[int]:
        """`ids` with the model's own ids for the words of its that a kept cache holds (PromptCache.align)."""
        prompt_cache = self.prompt_cache
        if prompt_cache is None or not self._pieces:
            return ids
        return prompt_cache.align(ids, self._pieces, self._same_text)

    def _same_text(self, a: list[int], b: list[int]) -> bool:
        with self.tokenizer_lock:
            return bool(self.tokenizer.decode(a) == self.tokenizer.decode(b))

    @property
    def vocab_size(self) -> int:
        """Length of a logits vector."""
        return getattr(self.model.config, "vocab_size", None) or len(self.tokenizer)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        name: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        quantize: str = "none",
        context_length: int = 0,
        prompt_cache_mb: int = DEFAULT_PROMPT_CACHE_MB,
        progress: Progress = lambda _message: None,
    ) -> TransformersEngine:
        """Load an HF model directory or a single .gguf file."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(path).expanduser()
        if not path.exists():
            raise ModelLoadError(f"MODEL_PATH {str(path)!r} does not exist.")
        gguf_file = None
        if path.is_file():
            if path.suffix != ".gguf":
                raise ModelLoadError(
                    f"MODEL_PATH {str(path)!r} is a file but not a .gguf model; give a .gguf file or a model directory."
                )
            path, gguf_file = path.parent, path.name
            model_type = "gguf"
        else:
            model_type = str(read_model_config(path).get("model_type", ""))
        device_name = pick_device(device)
        torch_dtype = pick_dtype(dtype, device_name)
        # ChatGLM3 ships its model and tokenizer as remote code inside the checkpoint.
        remote_code = model_type == "chatglm"
        multi_gpu = device_name == "cuda" and torch.cuda.device_count() > 1
        progress(f"Loading {path.name or path} on {device_name} ({str(torch_dtype).removeprefix('torch.')})…")
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=gguf_file, trust_remote_code=remote_code)
            # Any, as TransformersEngine.model: the class is picked at run time (ChatGLM's is remote
            # code, with a quantize() transformers' types don't know).
            model: Any = AutoModelForCausalLM.from_pretrained(
                path,
                gguf_file=gguf_file,
                dtype=torch_dtype,
                trust_remote_code=remote_code,
                device_map="auto" if multi_gpu else None,
            )
        except Exception as error:  # transformers raises many kinds; the user needs one sentence
            raise ModelLoadError(
                f"Could not load the model at {str(path)!r}: {type(error).__name__}: {error}"
            ) from error
        own_quantize = quantize != "none" and hasattr(model, "quantize")
        if own_quantize:
            model = model.quantize(int(quantize))
        if not multi_gpu:
            model = model.to(device_name)
        model.eval()
        fast = None
        reason = unsupported_reason(model)
        if quantize != "none" and not own_quantize and (reason or torch_dtype != torch.bfloat16):
            raise ModelLoadError(
                f"QUANTIZE={quantize} needs a model whose code offers quantize(bits), such as ChatGLM3, "
                f"or a Llama-family model on CPU in bfloat16; here {reason or f'the dtype is {torch_dtype}'}."
            )
        if not own_quantize and reason is None:
            progress("Packing the weights for CPU decoding…")
            fast = FastLlama(model, *PACKED_BITS[quantize])
        declared = getattr(model.config, "max_position_embeddings", 0) or getattr(model.config, "seq_length", 2048)
        info = EngineInfo(
            name=name or (gguf_file or path.name),
            device=device_name if not multi_gpu else f"cuda x{torch.cuda.device_count()}",
            dtype=str(torch_dtype).removeprefix("torch."),
            context_length=context_length or min(int(declared), MAX_AUTO_CONTEXT),
            model_type=model_type,
            weights=f"int{fast.weight_bits}" if fast is not None and fast.weight_bits != 16 else "",
        )
        return cls(model, tokenizer, info, fast, default_prompt_cache(prompt_cache_mb))

    def close(self) -> None:
        """Free the model (the model pool unloads it): the decode thread ends, the weights and KV caches go.

        A reply in progress ends with "The engine has shut down.", and so does every later one.
        """
        if self.decoder is not None:
            self.decoder.close()  # its sequences end with that error; the thread lets go of the weights
        if self.prompt_cache is not None:
            self.prompt_cache.clear()
        with self._forward_lock:  # the reference loop's forward in progress finishes first
            self.model = self.fast = self.decoder = self.prompt_cache = None

    def generate(
        self,
        input_ids: list[int],
        params: GenerationParams,
        stop_ids: set[int],
        cancel: threading.Event | None = None,
        constraint: TokenConstraint | None = None,
    ) -> Iterator[int]:
        """`Engine.generate`: from the packed path's decode thread, else from the reference loop."""
        decoder = self.decoder  # read once: close() may clear it meanwhile
        if decoder is not None:
            yield from decoder.generate(input_ids, params, stop_ids, cancel, constraint)
            return
        if self.model is None:
            raise RuntimeError("The engine has shut down.")
        from transformers import DynamicCache

        picker = TokenPicker(input_ids, params, stop_ids, constraint)
        cache = DynamicCache()
        step_input = torch.tensor([input_ids], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            while not picker.finished:
                if cancel is not None and cancel.is_set():
                    return
                with self._forward_lock:
                    if self.model is None:  # closed while this reply ran
                        raise RuntimeError("The engine has shut down.")
                    output = self.model(input_ids=step_input, past_key_values=cache, use_cache=True)
                token = picker.pick(output.logits[0, -1].float().cpu())
                if token is None:
                    return
                yield token
                step_input = torch.tensor([[token]], dtype=torch.long, device=self.device)
