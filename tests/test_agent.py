"""The turn loop with a scripted model: exact observations, limits, failures and stops."""

from __future__ import annotations

from glm_client import Done, Message, Notice, TextDelta, ToolCall
from glm_client.agent import (
    ALREADY_CALLED,
    ALREADY_NOT_RUN,
    ObservationEvent,
    RoundLimitReached,
    round_limit_notice,
    run_turn,
)

TOOL = {"type": "function", "function": {"name": "f", "description": "A tool.", "parameters": {"type": "object"}}}


def echo_executor(call: ToolCall) -> Message:
    return Message.observation(f"ran {call.name} with {call.arguments}")


def test_a_call_is_executed_and_the_model_answers_with_the_observation_in_its_prompt(scripted):
    scripted.queue([TextDelta("Checking. "), ToolCall("get_weather", {"city_name": "Paris"}, id="c1")], "It is sunny.")
    conversation = [Message.user("Weather in Paris?")]
    events = list(run_turn(scripted, conversation, echo_executor))
    observations = [e for e in events if isinstance(e, ObservationEvent)]
    assert [o.message.content for o in observations] == ["ran get_weather with {'city_name': 'Paris'}"]
    assert [m.role for m in conversation] == ["user", "assistant", "observation", "assistant"]
    assert conversation[1].content == "Checking. " and conversation[1].tool_calls[0].id == "c1"
    assert conversation[2].tool_call_id == "c1" and conversation[2].name == "get_weather"
    assert conversation[3].content == "It is sunny."
    second_prompt = scripted.requests[1][0]
    assert second_prompt[-1].role == "observation" and second_prompt[-1].content.startswith("ran get_weather")


def test_a_malformed_call_becomes_an_error_observation_without_running_anything(scripted):
    ran = []
    scripted.queue([ToolCall("", parse_error="The tool call is not valid JSON.")], "Sorry.")
    conversation = [Message.user("go")]
    list(run_turn(scripted, conversation, lambda call: ran.append(call) or Message.observation("x")))
    assert ran == []
    assert conversation[2].is_error and "was not run: The tool call is not valid JSON." in conversation[2].content


def test_an_executor_that_raises_is_reported_to_the_model(scripted):
    def broken(call: ToolCall) -> Message:
        raise RuntimeError("disk on fire")

    scripted.queue([ToolCall("f", {})], "ok")
    conversation = [Message.user("go")]
    list(run_turn(scripted, conversation, broken))
    assert conversation[2].is_error and conversation[2].content == "Running `f` failed: RuntimeError: disk on fire"


def test_at_the_round_limit_one_last_round_answers_without_tools(scripted):
    scripted.queue(*[[ToolCall("f", {"n": i})] for i in range(3)], "From the results: 0, 1 and 2.")
    conversation = [Message.user("loop forever")]
    events = list(run_turn(scripted, conversation, echo_executor, [TOOL], max_rounds=3))
    limit = events.index(RoundLimitReached(3))
    assert events[limit + 1] == Notice(round_limit_notice(3))
    assert sum(m.role == "observation" for m in conversation) == 3
    assert [tools for _, tools, _ in scripted.requests] == [[TOOL]] * 3 + [None]  # the last round offers none
    assert conversation[-1].role == "assistant" and conversation[-1].content == "From the results: 0, 1 and 2."
    assert conversation[-1].meta["notices"] == [round_limit_notice(3)]


def test_a_call_in_the_words_only_round_is_not_run(scripted):
    ran: list[ToolCall] = []
    scripted.queue([ToolCall("f", {"n": 1})], [TextDelta("Let me check again. "), ToolCall("f", {"n": 2})])
    conversation = [Message.user("go")]
    list(run_turn(scripted, conversation, lambda call: ran.append(call) or echo_executor(call), [TOOL], max_rounds=1))
    assert [call.arguments for call in ran] == [{"n": 1}]
    assert conversation[-1].content == "Let me check again. " and conversation[-1].tool_calls == []


def test_a_repeated_call_is_not_run_again_and_the_model_is_asked_to_answer(scripted):
    """Raw pattern of a small model: after a correct result it calls the same tool again and again."""
    ran: list[ToolCall] = []
    same = {"expression": "6*7"}
    scripted.queue(
        [ToolCall("calculator", same, id="c1")],
        [ToolCall("calculator", same, id="c2")],
        "6 times 7 is 42.",
    )
    conversation = [Message.user("What is 6 times 7?")]
    list(run_turn(scripted, conversation, lambda call: ran.append(call) or Message.observation("42"), [TOOL]))
    assert [call.id for call in ran] == ["c1"]
    repeated = conversation[4]
    assert (repeated.content, repeated.name, repeated.tool_call_id, repeated.is_error) == (
        ALREADY_CALLED.format(name="calculator"),
        "calculator",
        "c2",
        False,
    )
    assert scripted.requests[2][1] is None  # the answer round offers no tools
    assert [m.role for m in conversation] == [
        "user",
        "assistant",
        "observation",
        "assistant",
        "observation",
        "assistant",
    ]
    assert conversation[-1].content == "6 times 7 is 42."


# A load run's Code Interpreter turn (bench_load.py): the embedded model's reply was stopped as a
# loop inside its code, and it wrote the same reply, to the token, in each of the next 4 rounds.
LOOPED_CODE = (
    "import numpy as np\n\ndef u6t6_marker():\n    return lambda x=[x[i][:,:],x[:j]+2*k:(x[i+1:]+(x[i+2:-1]*2)+2):**\n"
    "       plt.gca().axis([-1,1,None,1])\n      plt.gca().set_label('%d-marker%d-marker-%d-marker-%d-marker-%d-marker-%"
)
LOOP_CUT = "The reply was stopped as a loop before the call ended, so it was not run."


def looped_call(call_id: str) -> ToolCall:
    return ToolCall("interpreter", {"code": LOOPED_CODE}, id=call_id, raw=LOOPED_CODE, parse_error=LOOP_CUT)


def test_a_call_not_run_and_written_again_word_for_word_ends_the_calls(scripted):
    ran: list[ToolCall] = []
    scripted.queue([looped_call("c1")], [looped_call("c2")], "I could not write that code.")
    conversation = [Message.user("Print a marker and plot [1, 2, 3].")]
    list(run_turn(scripted, conversation, lambda call: ran.append(call) or Message.observation("ran"), [TOOL]))
    assert ran == []
    first, second = (m for m in conversation if m.role == "observation")
    assert first.content == f"Your tool call was not run: {LOOP_CUT}"
    assert (second.content, second.tool_call_id, second.is_error) == (ALREADY_NOT_RUN, "c2", True)
    assert [tools for _, tools, _ in scripted.requests] == [[TOOL], [TOOL], None]  # the third round answers
    assert conversation[-1].content == "I could not write that code."


def test_two_different_malformed_calls_are_each_answered_with_their_error(scripted):
    """Both have no arguments; what the model wrote differs, so the second is no repeat."""
    bad = "The tool call is not valid JSON."
    scripted.queue(
        [ToolCall("", raw='{"name": "f", "arguments": {', parse_error=bad)],
        [ToolCall("", raw='{"name": "f" "arguments": {}}', parse_error=bad)],
        "Sorry.",
    )
    conversation = [Message.user("go")]
    list(run_turn(scripted, conversation, echo_executor, [TOOL]))
    answers = [m.content for m in conversation if m.role == "observation"]
    assert answers == [f"Your tool call was not run: {bad}"] * 2
    assert [tools for _, tools, _ in scripted.requests] == [[TOOL], [TOOL], [TOOL]]


def test_the_model_reads_as_much_of_a_result_as_its_context_holds(scripted):
    """Any executor's result: the scripted model's 4,096-token context reads 1,024 characters of it."""
    numbers = " ".join(str(n) for n in range(2000))
    scripted.queue([ToolCall("f", {})], "Many numbers.")
    conversation = [Message.user("count")]
    list(run_turn(scripted, conversation, lambda call: Message.observation(numbers), [TOOL]))
    read = scripted.requests[1][0][-1]
    assert len(read.content) <= 1024 < len(numbers)
    assert read.content.startswith("0 1 2 3") and read.content.endswith("1998 1999")
    assert read.content.count("characters omitted") == 1
    assert read.meta["full_text"] == numbers  # the user's copy is whole


def test_force_tool_applies_to_the_first_round_only(scripted):
    scripted.queue([ToolCall("f", {})], "done")
    list(run_turn(scripted, [Message.user("x")], echo_executor, force_tool="f", temperature=0.0))
    assert scripted.requests[0][2] == {"temperature": 0.0, "force_tool": "f"}
    assert scripted.requests[1][2] == {"temperature": 0.0}


def test_a_plain_answer_ends_the_turn_after_one_round(scripted):
    scripted.queue("Hello there!")
    conversation = [Message.user("hi")]
    events = list(run_turn(scripted, conversation))
    assert [e.finish_reason for e in events if isinstance(e, Done)] == ["stop"]
    assert conversation[-1].content == "Hello there!" and conversation[-1].meta["finish_reason"] == "stop"


def test_closing_the_turn_mid_stream_keeps_the_partial_reply_marked_interrupted(scripted):
    scripted.queue("This reply will be cut short by the user.")
    conversation = [Message.user("talk")]
    turn = run_turn(scripted, conversation)
    shown = "".join(next(turn).text for _ in range(3))
    turn.close()
    assert conversation[-1].role == "assistant"
    assert conversation[-1].content == shown and conversation[-1].meta["interrupted"] is True


def test_without_an_executor_the_call_waits_for_a_hand_written_observation(scripted):
    scripted.queue([ToolCall("f", {"x": 1}, id="c9")], "Thanks, the answer is 42.")
    conversation = [Message.user("x")]
    list(run_turn(scripted, conversation, None))
    assert [m.role for m in conversation] == ["user", "assistant"] and conversation[1].tool_calls[0].id == "c9"
    conversation.append(Message.observation("42", name="f", tool_call_id="c9"))
    list(run_turn(scripted, conversation, None))
    assert conversation[-1].content == "Thanks, the answer is 42."
    assert scripted.requests[1][0][-1].content == "42"


def test_each_message_is_reported_once_final_at_its_index(scripted):
    """The save channel: every appended message is reported as it is appended and never changed after."""
    scripted.queue(*[[TextDelta(f"round {i}. "), ToolCall("f", {"n": i})] for i in range(2)])
    conversation = [Message.user("loop")]
    reported: list[tuple[int, str]] = []

    def on_message(index: int, message: Message) -> None:
        assert conversation[index] is message  # appended before it is reported
        reported.append((index, repr(message)))  # a snapshot: a later change would show below

    list(run_turn(scripted, conversation, echo_executor, max_rounds=2, on_message=on_message))
    assert [index for index, _ in reported] == [1, 2, 3, 4, 5]
    assert [snapshot for _, snapshot in reported] == [repr(message) for message in conversation[1:]]
    # The round limit is on the last reply as it was reported, not added to it afterwards.
    assert conversation[-1].meta["notices"] == [round_limit_notice(2)]
    assert all(isinstance(conversation[i].meta["duration_s"], float) for i in (2, 4))


def test_closing_a_turn_mid_reply_reports_the_partial_reply(scripted):
    """The page closes the turn when the user stops or clicks: the text so far is reported, marked."""
    scripted.queue([TextDelta("Hello"), TextDelta(" there"), TextDelta(" friend")])
    conversation = [Message.user("hi")]
    reported: list[tuple[int, Message]] = []
    turn = run_turn(scripted, conversation, on_message=lambda index, message: reported.append((index, message)))
    assert [next(turn), next(turn)] == [TextDelta("Hello"), TextDelta(" there")]
    turn.close()
    ((index, message),) = reported
    assert index == 1 and message.content == "Hello there" and message.meta["interrupted"] is True
