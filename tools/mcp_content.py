"""An MCP tool result (CallToolResult) as the ToolResult every tool gives: text for the model, images for the user.

- text parts are joined;
- images become observation images (the user sees them, the model reads `[Image]`), each
  at most MAX_IMAGE_BYTES and at most MAX_IMAGES of them; others are named in the text;
- embedded resources become text headed by their URI and MIME type;
- resource links are listed;
- empty content with `structuredContent` becomes its JSON;
- `isError` makes an error observation, which the model can correct;
- the text is capped as for other tools (tools/result.py).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from mcp_types import (
    AudioContent,
    BlobResourceContents,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
)

from tools.result import MAX_RESULT_CHARS, ToolResult, cap_text

MAX_IMAGE_BYTES = 5 * 1024 * 1024
MAX_IMAGES = 8


def to_tool_result(result: CallToolResult, *, tool: str, duration_s: float = 0.0) -> ToolResult:
    """What the model reads (and the user sees) for one MCP tool call's result."""
    parts: list[str] = []
    links: list[str] = []
    images: list[bytes] = []
    for block in result.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        elif isinstance(block, ImageContent):
            note = _add_image(block, images)
            if note:
                parts.append(note)
        elif isinstance(block, AudioContent):
            parts.append(f"[audio omitted: {block.mime_type}, {_decoded_size(block.data)} bytes]")
        elif isinstance(block, EmbeddedResource):
            parts.append(_resource_text(block.resource))
        elif isinstance(block, ResourceLink):
            mime = f" ({block.mime_type})" if block.mime_type else ""
            links.append(f"- {block.name}: {block.uri}{mime}")
    if links:
        parts.append("Resource links:\n" + "\n".join(links))
    if not parts and not images and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    text = "\n".join(parts)
    if result.is_error:
        message = f"Tool `{tool}` reported an error: {text or '(no details)'}"
        failure = ToolResult.failure(message, duration_s=duration_s)
        failure.images = images
        return failure
    capped, truncated = cap_text(text, MAX_RESULT_CHARS)
    return ToolResult(text=capped, value=text, duration_s=duration_s, truncated=truncated, images=images)


def _add_image(block: ImageContent, images: list[bytes]) -> str | None:
    """Keep the image, or say in the text why it was left out."""
    try:
        data = base64.b64decode(block.data, validate=True)
    except (binascii.Error, ValueError):
        return f"[image omitted: its {block.mime_type} data is not valid base64]"
    if len(data) > MAX_IMAGE_BYTES:
        return f"[image omitted: {len(data)} bytes of {block.mime_type}, over the {MAX_IMAGE_BYTES}-byte limit]"
    if len(images) >= MAX_IMAGES:
        return f"[image omitted: more than {MAX_IMAGES} images]"
    images.append(data)
    return None


def _resource_text(resource: TextResourceContents | BlobResourceContents) -> str:
    mime = resource.mime_type or "unknown type"
    if isinstance(resource, TextResourceContents):
        return f"[resource {resource.uri} ({mime})]\n{resource.text}"
    return f"[resource {resource.uri} ({mime}): {_decoded_size(resource.blob)} bytes of binary data]"


def _decoded_size(data: Any) -> int:
    return len(data) * 3 // 4 if isinstance(data, str) else 0
