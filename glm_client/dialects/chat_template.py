"""The dialect of any Hugging Face chat model: its own jinja chat template.

Tools go through `apply_chat_template(tools=...)` when the template knows them
(Qwen, Hermes, Llama 3…). When it doesn't (the embedded SmolLM2), the tools are
described in the system prompt and calls and results are replayed as text, so a
second call in the same conversation sees exactly what the first one looked like.
"""

from __future__ import annotations

from typing import Any, cast

from glm_client.dialects.base import CallSyntax, OutputParser, ToolSchema, split_interpreter
from glm_client.dialects.call_formats import (
    CallFormat,
    call_format_parser,
    call_format_syntax,
    decode_keeping,
    detect_call_format,
    special_tag_ids,
)
from glm_client.dialects.json_calls import JsonCallParser
from glm_client.dialects.reasoning import template_takes_thinking_switch
from glm_client.dialects.tool_prompt import (
    render_call_for_history,
    render_observation_for_history,
    template_supports_tools,
    tools_system_prompt,
)
from glm_client.messages import Message, ToolCall


class ChatTemplateDialect:
    name = "chat_template"

    def __init__(self, tokenizer: Any, call_format: str = "auto") -> None:
        """`call_format`: how the model writes calls (call_formats.py); "auto" reads it off the template."""
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("This tokenizer has no chat template; set DIALECT or use a chat (instruct) model.")
        self.tokenizer = tokenizer
        self.native_tools = template_supports_tools(tokenizer.chat_template)
        # Templates without tools get the <tool_call> JSON format described in the system prompt.
        self.call_format: CallFormat = "hermes"
        if self.native_tools:
            self.call_format = detect_call_format(tokenizer) if call_format == "auto" else cast(CallFormat, call_format)
        # Tags such as <arg_key> may be special tokens, which skip_special_tokens would drop.
        self._kept_tags = special_tag_ids(tokenizer, self.call_format)

    def encode(
        self, messages: list[Message], tools: list[ToolSchema] | None = None, enable_thinking: bool | None = None
    ) -> list[int]:
        """`enable_thinking` reaches the template only when it reads that switch (Qwen3, GLM-4.5…)."""
        ordinary, _ = split_interpreter(tools)
        if self.native_tools:
            conversation = [self._native_message(message) for message in messages]
            offered = list(tools or []) or None
        else:
            conversation = self._text_only_conversation(messages, ordinary)
            offered = None
        switch: dict[str, bool] = {}
        if enable_thinking is not None and template_takes_thinking_switch(self.tokenizer.chat_template):
            switch["enable_thinking"] = enable_thinking
        return list(
            self.tokenizer.apply_chat_template(
                _with_reasoning(conversation, messages),
                tools=offered,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=False,
                # Text that spells a control token (e.g. "<|im_start|>") stays text.
                sanitize_control_tokens=True,
                **switch,
            )
        )

    def stop_token_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        # GLM-4 and GLM-4.5 end a turn by starting the next one: <|user|>, or <|observation|> after a call.
        for token in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<end_of_turn>", "<|user|>", "<|observation|>"):
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != self.tokenizer.unk_token_id:
                ids.add(token_id)
        return sorted(token_id for token_id in ids if token_id is not None)

    def decode(self, ids: list[int]) -> str:
        return decode_keeping(self.tokenizer, ids, self._kept_tags)

    def prompt_text(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=False))

    def new_parser(self, tools: list[ToolSchema] | None = None) -> OutputParser:
        ordinary, interpreter = split_interpreter(tools)
        # A template with tool support calls the interpreter like any tool; a ```python fence
        # runs too (hermes), since that is what models write when asked for code, tools or not.
        if self.native_tools:
            return call_format_parser(self.call_format, list(tools or []) or None, interpreter)
        return JsonCallParser(ordinary or None, interpreter=interpreter)

    def call_syntax(self) -> CallSyntax:
        if self.native_tools:  # the layout the template writes calls in
            return call_format_syntax(self.call_format)
        return CallSyntax(code_fence=True)

    # --- history ------------------------------------------------------------------
    @staticmethod
    def _native_message(message: Message) -> dict[str, Any]:
        if message.role == "observation":
            return {
                "role": "tool",
                "content": message.model_text(),
                "name": message.name or "",
                "tool_call_id": message.tool_call_id,
            }
        out: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            out["tool_calls"] = [
                {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                for call in message.tool_calls
            ]
        return out

    @staticmethod
    def _text_only_conversation(messages: list[Message], tools: list[ToolSchema]) -> list[dict[str, str]]:
        conversation: list[dict[str, str]] = []
        system = next((m.content for m in messages if m.role == "system"), None)
        if tools:
            system = tools_system_prompt(tools, system)
        if system is not None:
            conversation.append({"role": "system", "content": system})
        for message in messages:
            if message.role == "system":
                continue
            if message.role == "observation":
                conversation.append({"role": "user", "content": _observation_text(message)})
            elif message.role == "assistant":
                conversation.append({"role": "assistant", "content": _reply_text(message)})
            else:
                conversation.append({"role": message.role, "content": message.content})
        return conversation


def _with_reasoning(conversation: list[dict[str, Any]], messages: list[Message]) -> list[dict[str, Any]]:
    """Each assistant turn's thinking as `reasoning_content`: the template decides what it keeps.

    Both lists hold the assistant turns once each and in order, whatever else was merged or renamed.
    """
    replies = [message for message in messages if message.role == "assistant"]
    turns = [turn for turn in conversation if turn.get("role") == "assistant"]
    if len(replies) != len(turns):
        return conversation
    for turn, reply in zip(turns, replies, strict=True):
        if reply.reasoning:
            turn["reasoning_content"] = reply.reasoning
    return conversation


def _reply_text(message: Message) -> str:
    """The reply's prose and calls; a call whose raw text keeps the model's own whitespace goes on without a newline."""
    text = message.content or ""
    for call in message.tool_calls:
        call_text = _call_text(call)
        text += call_text if not text or call_text[:1].isspace() else "\n" + call_text
    return text


def _call_text(call: ToolCall) -> str:
    if call.is_interpreter:
        return call.raw if call.raw is not None else f"```python\n{call.code}\n```"
    return render_call_for_history(call)


def _observation_text(message: Message) -> str:
    if message.name == "interpreter":
        return f"Execution result:\n```\n{message.model_text()}\n```"
    return render_observation_for_history(message)
