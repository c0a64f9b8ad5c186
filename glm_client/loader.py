"""`load_client()`: pick the model and the engine from the settings and build the client for them.

Order: OPENAI_BASE_URL (a server) → MODEL_PATH (a local HF directory or .gguf) →
the embedded default model. Engine: llama.cpp for a GGUF (the embedded model's too)
when `ENGINE=auto` and llama-cpp-python is installed, else transformers.
"""

from __future__ import annotations

import ctypes
import queue
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from glm_client.client import Client, LocalClient
from glm_client.config import Settings
from glm_client.dialects.base import Dialect
from glm_client.engines import llamacpp
from glm_client.engines.base import Engine, ModelLoadError, Progress
from glm_client.engines.transformers import TransformersEngine, pick_device
from glm_client.worker_thread import WorkerThread


def load_client(settings: Settings | None = None, progress: Progress = lambda _message: None) -> Client:
    """The client the settings ask for; raises ModelLoadError (one readable sentence) or ConfigError."""
    settings = settings or Settings.from_env()
    if settings.openai_base_url:
        from glm_client.remote.openai import OpenAIClient

        return OpenAIClient(
            settings.openai_base_url,
            api_key=settings.openai_api_key,
            model=settings.openai_model,
            thinking_switch=settings.openai_thinking_switch,
        )
    return in_passing_thread(lambda relay: _load_local(settings, relay), progress)


def _load_local(settings: Settings, progress: Progress) -> LocalClient:
    engine_name = choose_engine(settings)
    if settings.model_path:
        if engine_name == "llamacpp":
            engine: Engine = llamacpp.LlamaCppEngine.load(
                settings.model_path, context_length=settings.context_length, progress=progress
            )
        else:
            engine = TransformersEngine.load(
                settings.model_path,
                device=settings.device,
                dtype=settings.dtype,
                quantize="none" if settings.quantize == "auto" else settings.quantize,
                context_length=settings.context_length,
                prompt_cache_mb=settings.prompt_cache_mb,
                progress=progress,
            )
    else:
        from glm_client import embedded

        try:
            directory = embedded.ensure_cache(settings.cache_dir, progress)
        except embedded.EmbeddedModelError as error:
            raise ModelLoadError(str(error)) from None
        if engine_name == "llamacpp":
            engine = llamacpp.LlamaCppEngine.load(
                embedded.locate_gguf(),
                tokenizer_dir=directory,
                name=embedded.MODEL_NAME,
                context_length=settings.context_length,
                progress=progress,
            )
        else:
            engine = TransformersEngine.load(
                directory,
                name=embedded.MODEL_NAME,
                device=settings.device,
                dtype=settings.dtype,
                quantize=embedded_quantize(settings),
                context_length=settings.context_length,
                prompt_cache_mb=settings.prompt_cache_mb,
                progress=progress,
            )
    release_free_memory()
    dialect = pick_dialect(engine, settings.dialect, settings.tool_call_format)
    return LocalClient(engine, dialect, backend=engine_name)


def release_free_memory() -> None:
    """Hand memory freed during loading back to the OS (glibc only).

    Conversion and packing free large temporaries, but glibc keeps them in the loading
    thread's arena: about 200 MB of RSS for the embedded model on the int4 path.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


T = TypeVar("T")
_DONE = object()


def in_passing_thread(work: Callable[[Progress], T], progress: Progress) -> T:
    """Run `work` on a thread that ends with it, relaying its progress messages on the caller's thread.

    Loading runs torch ops, and the thread that runs them keeps a team of OpenMP
    threads for life. The engine's decode thread has a team of its own; with more
    such threads than cores, libgomp stops its workers spinning between parallel
    regions, and every op of the decode thread waits for its workers to wake: 2-3x
    slower decoding measured here. A loading thread that ends takes its team along.
    """
    messages: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def run() -> T:
        try:
            return work(messages.put)
        finally:
            messages.put(_DONE)

    worker = WorkerThread(run, name="glm-load")
    while (message := messages.get()) is not _DONE:
        progress(message)
    worker.join()
    return worker.result()  # what `work` raised is re-raised on the caller's thread


def embedded_quantize(settings: Settings) -> str:
    """QUANTIZE=auto for the embedded model: int4 where the packed CPU path runs it.

    Its weights come from a 4-bit GGUF (Q4_1, 32-wide groups, the packed int4 layout),
    so int4 loses nothing measurable and decodes 2-3x faster (bench/bench_engine.py).
    """
    if settings.quantize != "auto":
        return settings.quantize
    on_cpu = pick_device(settings.device) == "cpu"
    return "4" if on_cpu and settings.dtype in ("auto", "bfloat16") else "none"


def choose_engine(settings: Settings) -> str:
    """ "llamacpp" or "transformers", from ENGINE, the model and what is installed."""
    gguf = not settings.model_path or settings.model_path.endswith(".gguf")
    if settings.engine == "llamacpp":
        if not llamacpp.available():
            raise ModelLoadError(
                "ENGINE=llamacpp needs llama-cpp-python, which is optional: run `make bench-deps`, or set ENGINE=auto."
            )
        if not gguf:
            raise ModelLoadError("ENGINE=llamacpp runs .gguf files and the embedded model; MODEL_PATH is a directory.")
        return "llamacpp"
    if settings.engine == "transformers":
        return "transformers"
    # auto: llama.cpp when it can run the model as asked (a GGUF, on CPU, with its own quantization)
    on_cpu = settings.device == "cpu" or (settings.device == "auto" and not torch.cuda.is_available())
    if gguf and on_cpu and settings.quantize == "auto" and settings.dtype == "auto" and llamacpp.available():
        return "llamacpp"
    return "transformers"


def pick_dialect(engine: Engine, requested: str = "auto", call_format: str = "auto") -> Dialect:
    """ChatGLM3 checkpoints (model_type "chatglm") get their native format; others their chat template.

    `call_format` (TOOL_CALL_FORMAT) is how a chat-template model writes calls; "auto" reads it off the template.
    """
    from glm_client.dialects.chat_template import ChatTemplateDialect

    if requested == "chatglm3" or (requested == "auto" and engine.info.model_type == "chatglm"):
        from glm_client.dialects.chatglm3 import ChatGLM3Dialect, is_chatglm3

        # ChatGLM2 and remote-code GLM-4 share model_type "chatglm"; their tokens tell them apart.
        if requested == "chatglm3" or is_chatglm3(engine.tokenizer):
            return ChatGLM3Dialect.from_hf_tokenizer(engine.tokenizer)
    try:
        return ChatTemplateDialect(engine.tokenizer, call_format)
    except ValueError as error:
        raise ModelLoadError(str(error)) from None
