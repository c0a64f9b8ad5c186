"""Everything about talking to a model: messages in, streamed events out.

from glm_client import load_client, Message
client = load_client()
for event in client.stream([Message.user("Hi")], temperature=0.0): ...

The data model, events and settings import at once; the client and engines (torch,
transformers, xgrammar) only when first used, so `store`, `tools` and `sandbox` that need
only the data model or the settings never load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from glm_client.config import ConfigError, GenerationParams, Settings
from glm_client.events import (
    Done,
    Event,
    Notice,
    ReasoningDelta,
    TextDelta,
    Timings,
    ToolCallProgress,
    ToolCallStart,
    Usage,
)
from glm_client.messages import INTERPRETER, Message, ToolCall

if TYPE_CHECKING:
    from glm_client.client import Client, LocalClient, ModelInfo, PromptView, collect_text
    from glm_client.engines.base import ModelLoadError
    from glm_client.loader import load_client

_LAZY = {
    "ModelLoadError": "glm_client.engines.base",
    "Client": "glm_client.client",
    "LocalClient": "glm_client.client",
    "ModelInfo": "glm_client.client",
    "PromptView": "glm_client.client",
    "collect_text": "glm_client.client",
    "load_client": "glm_client.loader",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'glm_client' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "INTERPRETER",
    "Client",
    "ConfigError",
    "Done",
    "Event",
    "GenerationParams",
    "LocalClient",
    "Message",
    "ModelInfo",
    "ModelLoadError",
    "Notice",
    "PromptView",
    "ReasoningDelta",
    "Settings",
    "TextDelta",
    "Timings",
    "ToolCall",
    "ToolCallProgress",
    "ToolCallStart",
    "Usage",
    "collect_text",
    "load_client",
]
