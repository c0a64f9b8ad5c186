"""`load_client()`: pick the model from the settings and build the client for it.

Order: OPENAI_BASE_URL (a server) → MODEL_PATH (a local HF directory or .gguf) →
the embedded default model.
"""

from __future__ import annotations

from glm_client.backends.transformers import ModelLoadError, Progress, TransformersEngine
from glm_client.client import Client, LocalClient
from glm_client.config import Settings
from glm_client.dialects.base import Dialect


def load_client(settings: Settings | None = None, progress: Progress = lambda _message: None) -> Client:
    """The client the settings ask for; raises ModelLoadError (one readable sentence) or ConfigError."""
    settings = settings or Settings.from_env()
    if settings.openai_base_url:
        from glm_client.backends.openai import OpenAIClient

        return OpenAIClient(settings.openai_base_url, api_key=settings.openai_api_key, model=settings.openai_model)
    if settings.model_path:
        engine = TransformersEngine.load(
            settings.model_path,
            device=settings.device,
            dtype=settings.dtype,
            quantize=settings.quantize,
            context_length=settings.context_length,
            progress=progress,
        )
    else:
        from glm_client import embedded

        try:
            directory = embedded.ensure_cache(settings.cache_dir, progress)
        except embedded.EmbeddedModelError as error:
            raise ModelLoadError(str(error)) from None
        engine = TransformersEngine.load(
            directory,
            name=embedded.MODEL_NAME,
            device=settings.device,
            dtype=settings.dtype,
            context_length=settings.context_length,
            progress=progress,
        )
    return LocalClient(engine, pick_dialect(engine, settings.dialect))


def pick_dialect(engine: TransformersEngine, requested: str = "auto") -> Dialect:
    """ChatGLM3 checkpoints (model_type "chatglm") get their native format; others their chat template."""
    from glm_client.dialects.chat_template import ChatTemplateDialect

    if requested == "chatglm3" or (requested == "auto" and engine.info.model_type == "chatglm"):
        from glm_client.dialects.chatglm3 import ChatGLM3Dialect, is_chatglm3

        # ChatGLM2 and remote-code GLM-4 share model_type "chatglm"; their tokens tell them apart.
        if requested == "chatglm3" or is_chatglm3(engine.tokenizer):
            return ChatGLM3Dialect.from_hf_tokenizer(engine.tokenizer)
    try:
        return ChatTemplateDialect(engine.tokenizer)
    except ValueError as error:
        raise ModelLoadError(str(error)) from None
