"""The Code Interpreter loop end to end with the real embedded model and a real kernel.

The model's arithmetic is not the point (a 135M model gets sums wrong); the
pipeline is: its code block becomes an interpreter call, the kernel runs it, the
observation goes back into the prompt, and the model acts on it in the next round.
"""

from __future__ import annotations

import pytest

from glm_client import INTERPRETER, Done, Message, Notice, ToolCall
from glm_client.agent import ObservationEvent, RoundLimitReached, round_limit_notice, run_turn
from glm_client.dialects.base import INTERPRETER_TOOL
from glm_client.observations import fit_observation, observation_chars
from kernel import KernelSession
from kernel.executor import kernel_executor

pytestmark = [pytest.mark.model, pytest.mark.kernel]

SYSTEM = (
    "You are a helpful assistant that solves tasks by writing Python code. Write the code in one ```python block; "
    "it runs in a Jupyter kernel and you will see its output. When you have the result, answer in words."
)


def test_model_code_runs_in_the_kernel_and_the_model_reads_the_output(embedded_client, tmp_path):
    conversation = [
        Message.system(SYSTEM),
        Message.user("Write Python code that prints the sum of the numbers from 1 to 100."),
    ]
    prompts: list[list[Message]] = []
    offered: list[list | None] = []
    original_stream = embedded_client.stream

    def recording_stream(messages, tools=None, **params):
        prompts.append(list(messages))
        offered.append(tools)
        return original_stream(messages, tools, **params)

    with KernelSession(tmp_path / "work") as session:
        embedded_client.stream = recording_stream
        try:
            events = list(
                run_turn(
                    embedded_client,
                    conversation,
                    kernel_executor(session, timeout=30),
                    [INTERPRETER_TOOL],
                    max_rounds=1,  # what the model does with its second round's tools varies with its numerics
                    temperature=0.0,
                    max_new_tokens=150,
                )
            )
        finally:
            del embedded_client.stream
    calls = [event for event in events if isinstance(event, ToolCall)]
    observations = [event for event in events if isinstance(event, ObservationEvent)]
    assert calls and calls[0].is_interpreter and "print" in calls[0].code
    assert len(observations) == len(calls)
    first = observations[0].message
    assert first.role == "observation" and first.name == "interpreter"
    # The kernel really ran the model's code: running it again gives the same output and status.
    with KernelSession(tmp_path / "again") as check:
        again = check.execute(calls[0].code, timeout=30)
        assert (first.content, first.meta["status"]) == (again.to_observation(), again.status)
    # The second round's prompt ends with that observation. It is the round limit's round: no tools
    # are offered, so the model answers in words, having read the output.
    assert prompts[1][-1].content == first.content
    assert len(calls) == 1
    assert offered == [[INTERPRETER_TOOL], None]
    roles = ["system", "user", "assistant", "observation", "assistant"]
    assert [m.role for m in conversation] == roles
    final = conversation[-1]
    assert final.content.strip() and final.tool_calls == []
    assert final.meta["notices"] == [round_limit_notice(1)]
    limit = events.index(RoundLimitReached(1))
    assert events[limit + 1] == Notice(round_limit_notice(1))


def test_a_long_printed_list_leaves_the_model_room_for_the_next_round(embedded_client, tmp_path):
    """Printed numbers take a token a digit: the model reads a share of the result its context holds."""
    call = ToolCall(INTERPRETER, {"code": "print(list(range(5000)))"}, id="call_1")
    max_chars = observation_chars(embedded_client.info.context_length)
    with KernelSession(tmp_path / "work") as session:
        observation = fit_observation(kernel_executor(session, timeout=30)(call), max_chars)  # as run_turn does
    assert observation.content.startswith("[0, 1, 2") and observation.content.endswith("4998, 4999]\n")
    assert observation.meta["full_text"] == str(list(range(5000))) + "\n"  # the user's copy is whole
    conversation = [
        Message.system(SYSTEM),
        Message.user("Print the numbers below 5000."),
        Message.assistant("", [call]),
        observation,
    ]
    done = [event for event in embedded_client.stream(conversation, max_new_tokens=4) if isinstance(event, Done)]
    assert done[-1].finish_reason != "error", done[-1].error
