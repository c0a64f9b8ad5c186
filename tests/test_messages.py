import json

import pytest

from glm_client import Message, ToolCall
from glm_client.messages import INTERPRETER


def test_constructors_set_roles_and_fields():
    call = ToolCall("get_weather", {"city_name": "北京"})
    assistant = Message.assistant("Let me check.", [call])
    observation = Message.observation("sunny", name="get_weather", tool_call_id=call.id, images=[b"\x89PNG"])
    assert [m.role for m in (Message.system("s"), Message.user("u"), assistant, observation)] == [
        "system",
        "user",
        "assistant",
        "observation",
    ]
    assert assistant.tool_calls[0].arguments == {"city_name": "北京"}
    assert observation.tool_call_id == call.id


def test_unknown_role_is_refused_with_a_sentence():
    with pytest.raises(ValueError, match="Unknown message role 'robot'"):
        Message("robot", "hi")  # type: ignore[arg-type]


def test_dict_round_trip_keeps_everything_including_images():
    call = ToolCall("f", {"a": [1, {"b": None}]}, raw="<tool_call>{...}</tool_call>", parse_error=None)
    original = [
        Message.system("be brief"),
        Message.user("hi"),
        Message.assistant("calling", [call]),
        Message.observation("done", name="f", tool_call_id=call.id, images=[bytes(range(256))], is_error=True),
    ]
    original[2].meta["interrupted"] = True
    restored = [Message.from_dict(json.loads(json.dumps(m.to_dict()))) for m in original]
    assert restored == original


def test_model_text_replaces_images_with_placeholders():
    assert Message.observation("out", images=[b"1", b"2"]).model_text() == "out\n[Image]\n[Image]"
    assert Message.observation("", images=[b"1"]).model_text() == "[Image]"
    assert Message.user("plain").model_text() == "plain"
    in_order = Message.observation("before\n[Image]\nafter", images=[b"1"])
    assert in_order.model_text() == "before\n[Image]\nafter"


def test_openai_format_round_trip():
    call = ToolCall("calculator", {"expression": "2+2"}, id="call_1")
    messages = [
        Message.user("2+2?"),
        Message.assistant("", [call]),
        Message.observation("4", name="calculator", tool_call_id="call_1"),
    ]
    wire = [m.to_openai() for m in messages]
    assert wire[1]["tool_calls"][0]["function"] == {"name": "calculator", "arguments": '{"expression": "2+2"}'}
    assert wire[2] == {"role": "tool", "content": "4", "tool_call_id": "call_1", "name": "calculator"}
    back = [Message.from_openai(w) for w in wire]
    assert back[1].tool_calls[0].arguments == {"expression": "2+2"}
    assert back[2].role == "observation" and back[2].content == "4"


def test_openai_parsing_errors_are_readable():
    with pytest.raises(ValueError, match="Unknown message role 'wizard'"):
        Message.from_openai({"role": "wizard", "content": "x"})
    with pytest.raises(ValueError, match="not valid JSON"):
        Message.from_openai({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]})
    assert (
        Message.from_openai(
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
        ).content
        == "ab"
    )


def test_interpreter_call_exposes_code():
    call = ToolCall(INTERPRETER, {"code": "print(1)"})
    assert call.is_interpreter and call.code == "print(1)"
    assert ToolCall("other", {"code": "x"}).code == ""
