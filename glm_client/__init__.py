"""Everything about talking to a model: messages in, streamed events out.

from glm_client import load_client, Message
client = load_client()
for event in client.stream([Message.user("Hi")], temperature=0.0): ...
"""

from glm_client.backends.transformers import ModelLoadError
from glm_client.client import Client, LocalClient, ModelInfo, collect_text
from glm_client.config import ConfigError, GenerationParams, Settings
from glm_client.events import Done, Event, Notice, TextDelta, Timings, ToolCallStart, Usage
from glm_client.loader import load_client
from glm_client.messages import INTERPRETER, Message, ToolCall

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
    "Settings",
    "TextDelta",
    "Timings",
    "ToolCall",
    "ToolCallStart",
    "Usage",
    "collect_text",
    "load_client",
]
