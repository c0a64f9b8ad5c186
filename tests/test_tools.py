"""The tool registry: schemas from signatures, and every path through dispatch_tool."""

from __future__ import annotations

import enum
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import pytest

from tools import ToolRegistry, ToolResult, dispatch_tool, get_tool_status, get_tools, register_tool
from tools.result import MAX_RESULT_CHARS
from tools.schema import SchemaError, function_schema, parse_docstring

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry()


def parameters(func: Any) -> dict[str, Any]:
    return function_schema(func).parameters


# --- schemas -----------------------------------------------------------------------------


def test_schema_from_plain_types_and_google_docstring() -> None:
    def search(query: str, limit: int, threshold: float = 0.5, exact: bool = False) -> list[str]:
        """Search the notes.

        Looks through every note.

        Args:
            query: Words to look for.
            limit: At most this many hits,
                counted after filtering.
            threshold (float): Minimum score.

        Returns:
            The matching titles.
        """

    schema = function_schema(search)
    assert schema.description == "Search the notes.\n\nLooks through every note."
    assert schema.parameters == {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "Words to look for."},
            "limit": {"type": "integer", "description": "At most this many hits, counted after filtering."},
            "threshold": {"type": "number", "description": "Minimum score.", "default": 0.5},
            "exact": {"type": "boolean", "default": False},
        },
        "required": ["query", "limit"],
        "additionalProperties": False,
    }


def test_optional_and_union_none_are_nullable_and_not_required() -> None:
    def f(a: Optional[int], b: str | None, c: int | str) -> None:  # noqa: UP045 (testing the old spelling)
        """F."""

    params = parameters(f)
    assert params["properties"]["a"] == {"type": ["integer", "null"]}
    assert params["properties"]["b"] == {"type": ["string", "null"]}
    assert params["properties"]["c"] == {"type": ["integer", "string"]}
    assert params["required"] == ["c"]


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point:
    """Not something a model can send as JSON."""


def test_literal_and_enum_become_enums() -> None:
    def f(unit: Literal["celsius", "fahrenheit"], color: Color, level: Literal[1, 2, 3] = 1) -> None:
        """F."""

    props = parameters(f)["properties"]
    assert props["unit"] == {"type": "string", "enum": ["celsius", "fahrenheit"]}
    assert props["color"] == {"type": "string", "enum": ["red", "blue"]}
    assert props["level"] == {"type": "integer", "enum": [1, 2, 3], "default": 1}


def test_containers() -> None:
    def f(
        tags: list[str],
        matrix: list[list[float]],
        options: dict,
        weights: dict[str, float],
        pair: tuple[int, int],
        row: tuple[str, int],
        many: tuple[int, ...],
        anything: Any,
        untyped,
    ) -> None:
        """F."""

    props = parameters(f)["properties"]
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["matrix"] == {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
    assert props["options"] == {"type": "object"}
    assert props["weights"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert props["pair"] == {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "integer"}}
    assert props["row"]["prefixItems"] == [{"type": "string"}, {"type": "integer"}]
    assert props["many"] == {"type": "array", "items": {"type": "integer"}}
    assert props["anything"] == {}
    assert props["untyped"] == {}


def test_chatglm3_annotated_parameters() -> None:
    def get_weather(
        city_name: Annotated[str, "The name of the city to be queried", True],
        days: Annotated[int, "How many days ahead", False] = 1,
        units: Annotated[str, "Units system"] = "metric",
    ) -> str:
        """Get the current weather for `city_name`"""

    schema = function_schema(get_weather)
    assert schema.description == "Get the current weather for `city_name`"
    assert schema.parameters["properties"]["city_name"] == {
        "type": "string",
        "description": "The name of the city to be queried",
    }
    assert schema.parameters["properties"]["days"]["description"] == "How many days ahead"
    assert schema.parameters["required"] == ["city_name"]


def test_annotated_required_flag_overrides_the_default() -> None:
    def f(x: Annotated[int, "forced", True] = 3, y: Annotated[int, "optional anyway", False] = 0) -> None:
        """F."""

    assert parameters(f)["required"] == ["x"]


def test_kwargs_allow_extra_properties_and_varargs_are_skipped() -> None:
    def f(a: int, *rest: int, **extra: Any) -> None:
        """F."""

    params = parameters(f)
    assert list(params["properties"]) == ["a"]
    assert "additionalProperties" not in params


def test_unsupported_annotation_names_the_parameter() -> None:
    def f(where: Point) -> None:
        """F."""

    with pytest.raises(SchemaError, match="parameter 'where' of f"):
        function_schema(f)


def test_unresolvable_forward_reference_is_a_schema_error() -> None:
    def f(x: NoSuchType) -> None:  # type: ignore[name-defined]  # noqa: F821
        """F."""

    with pytest.raises(SchemaError, match="cannot read the type hints of f"):
        function_schema(f)


def test_parse_docstring_without_sections() -> None:
    assert parse_docstring("  Just one line.  ") == ("Just one line.", {})
    assert parse_docstring("") == ("", {})


# --- registry ------------------------------------------------------------------------------


def test_register_as_bare_and_parametrised_decorator(registry: ToolRegistry) -> None:
    @registry.register
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @registry.register(name="mul", description="Multiply.")
    def multiply(a: int, b: int) -> int:
        return a * b

    assert add(2, 3) == 5  # the decorator returns the function unchanged
    names = [schema["function"]["name"] for schema in registry.get_tools()]
    assert names == ["add", "mul"]
    mul = registry.get_tools()[1]
    assert mul["type"] == "function"
    assert mul["function"]["description"] == "Multiply."
    assert mul["function"]["parameters"]["required"] == ["a", "b"]


def test_reregistering_a_name_replaces_the_tool(registry: ToolRegistry) -> None:
    @registry.register(name="version")
    def v1() -> int:
        return 1

    @registry.register(name="version")
    def v2() -> int:
        return 2

    assert len(registry) == 1
    assert dispatch_tool("version", {}, registry=registry).value == 2


def test_disabled_tools_are_hidden_and_explained(registry: ToolRegistry) -> None:
    @registry.register(enabled=False)
    def off() -> str:
        """Off."""
        return "never"

    @registry.register
    def on() -> str:
        """On."""
        return "yes"

    assert [tool.name for tool in registry.list_tools()] == ["on"]
    assert [tool.name for tool in registry.list_tools(include_disabled=True)] == ["off", "on"]
    status = {s.name: s for s in registry.get_tool_status()}
    assert status["off"].enabled is False
    assert status["off"].reason == "disabled by the operator"
    assert status["on"].reason is None

    result = dispatch_tool("off", {}, registry=registry)
    assert not result.ok
    assert result.text == "Tool `off` is disabled by the operator."

    registry.set_enabled("off", True)
    assert dispatch_tool("off", {}, registry=registry).text == "never"


def test_dangerous_tool_needs_its_environment_variable(registry: ToolRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    @registry.register(name="rm-rf", dangerous=True)
    def wipe() -> str:
        return "wiped"

    monkeypatch.delenv("ENABLE_RM_RF_TOOL", raising=False)
    assert registry.get_tools() == []
    assert "set ENABLE_RM_RF_TOOL=1" in dispatch_tool("rm-rf", {}, registry=registry).text

    monkeypatch.setenv("ENABLE_RM_RF_TOOL", "1")  # read at call time, no re-import needed
    assert [s["function"]["name"] for s in registry.get_tools()] == ["rm-rf"]
    assert dispatch_tool("rm-rf", {}, registry=registry).text == "wiped"


def test_default_registry_has_the_builtins_and_shell_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENABLE_SHELL_TOOL", raising=False)
    names = {schema["function"]["name"] for schema in get_tools()}
    assert {"calculator", "get_current_time", "get_weather", "random_number_generator", "unit_convert"} <= names
    assert "shell" not in names
    shell_status = next(s for s in get_tool_status() if s.name == "shell")
    assert shell_status.dangerous and not shell_status.enabled
    assert "ENABLE_SHELL_TOOL" in (shell_status.reason or "")


def test_module_level_register_tool_uses_the_default_registry() -> None:
    from tools import default_registry

    @register_tool(name="_test_echo")
    def echo(text: str) -> str:
        """Echo."""
        return text

    try:
        assert dispatch_tool("_test_echo", {"text": "hi"}).text == "hi"
    finally:
        default_registry.unregister("_test_echo")
    assert "_test_echo" not in default_registry


# --- dispatch: error paths ----------------------------------------------------------------


@pytest.fixture
def weather_registry(registry: ToolRegistry) -> ToolRegistry:
    @registry.register
    def get_weather(city_name: Annotated[str, "The name of the city to be queried", True]) -> dict[str, Any]:
        """Get the current weather for `city_name`"""
        return {"city": city_name, "temperature_c": 21}

    @registry.register
    def add(a: int, b: int = 0) -> int:
        """Add."""
        return a + b

    return registry


def test_unknown_tool_lists_the_available_ones(weather_registry: ToolRegistry) -> None:
    result = dispatch_tool("get_wether", {}, registry=weather_registry)
    assert result == ToolResult(
        text="Tool `get_wether` not found; available tools: add, get_weather",
        ok=False,
        error="Tool `get_wether` not found; available tools: add, get_weather",
    )


def test_missing_required_argument(weather_registry: ToolRegistry) -> None:
    result = dispatch_tool("get_weather", {}, registry=weather_registry)
    assert not result.ok
    assert result.text.startswith("Invalid arguments for `get_weather`: 'city_name' is a required property")
    assert "- city_name (string, required): The name of the city to be queried" in result.text


def test_wrong_argument_type_names_the_argument(weather_registry: ToolRegistry) -> None:
    result = dispatch_tool("add", {"a": "one"}, registry=weather_registry)
    assert not result.ok
    assert "'a': 'one' is not of type 'integer'" in result.text
    assert "- b (integer, optional)" in result.text


def test_unexpected_argument_is_named(weather_registry: ToolRegistry) -> None:
    result = dispatch_tool("get_weather", {"city_name": "Paris", "country": "FR"}, registry=weather_registry)
    assert not result.ok
    assert "'country' was unexpected" in result.text


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"city_name": "Paris"', "arguments are not valid JSON"),
        ('["Paris"]', "arguments must be a JSON object, got list"),
        (42, "arguments must be a JSON object, got int"),
        ("null", "arguments must be a JSON object, got NoneType"),
    ],
)
def test_arguments_that_are_not_an_object(weather_registry: ToolRegistry, arguments: Any, expected: str) -> None:
    result = dispatch_tool("get_weather", arguments, registry=weather_registry)
    assert not result.ok
    assert result.text.startswith("Invalid arguments for `get_weather`: ")
    assert expected in result.text


def test_json_string_arguments_are_parsed(weather_registry: ToolRegistry) -> None:
    result = dispatch_tool("get_weather", '{"city_name": "北京"}', registry=weather_registry)
    assert result.ok
    assert result.value == {"city": "北京", "temperature_c": 21}
    assert result.text == '{"city": "北京", "temperature_c": 21}'  # ensure_ascii=False


def test_empty_arguments_mean_no_arguments(registry: ToolRegistry) -> None:
    @registry.register
    def ping() -> str:
        return "pong"

    assert dispatch_tool("ping", "", registry=registry).text == "pong"
    assert dispatch_tool("ping", None, registry=registry).text == "pong"


def test_exception_in_the_tool_is_reported(registry: ToolRegistry) -> None:
    @registry.register
    def fail(x: int) -> None:
        print("about to fail")
        raise ValueError(f"bad x: {x}")

    result = dispatch_tool("fail", {"x": 3}, registry=registry)
    assert not result.ok
    assert result.error == "Tool `fail` raised ValueError: bad x: 3"
    assert result.stdout == "about to fail\n"
    assert result.text == "Tool `fail` raised ValueError: bad x: 3\n\nstdout:\nabout to fail\n"


def test_system_exit_in_the_tool_does_not_escape(registry: ToolRegistry) -> None:
    @registry.register
    def leave() -> None:
        raise SystemExit(3)

    result = dispatch_tool("leave", {}, registry=registry)
    assert result.text == "Tool `leave` raised SystemExit: 3"


def test_timeout_abandons_the_tool(registry: ToolRegistry) -> None:
    release = threading.Event()

    @registry.register
    def hang() -> str:
        release.wait(5)
        return "late"

    started = time.perf_counter()
    result = dispatch_tool("hang", {}, timeout=0.05, registry=registry)
    elapsed = time.perf_counter() - started
    release.set()
    assert not result.ok
    assert result.text == "Tool `hang` timed out after 0.05 s"
    assert elapsed < 2
    assert result.duration_s >= 0.05


def test_non_serialisable_results_fall_back_to_repr(registry: ToolRegistry) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<Opaque>"

    @registry.register
    def opaque() -> Any:
        return Opaque()

    @registry.register
    def mixed() -> Any:
        return {"when": __import__("datetime").date(2024, 5, 1), "tags": {"a"}, "thing": Opaque()}

    @registry.register
    def circular() -> Any:
        loop: list[Any] = []
        loop.append(loop)
        return loop

    assert dispatch_tool("opaque", {}, registry=registry).text == '"<Opaque>"'
    assert json.loads(dispatch_tool("mixed", {}, registry=registry).text) == {
        "when": "2024-05-01",
        "tags": ["a"],
        "thing": "<Opaque>",
    }
    circular_result = dispatch_tool("circular", {}, registry=registry)
    assert circular_result.ok
    assert circular_result.text == "[[...]]"


def test_result_rendering_of_plain_values(registry: ToolRegistry) -> None:
    @registry.register
    def nothing() -> None:
        return None

    @registry.register
    def number() -> float:
        return 2.5

    assert dispatch_tool("nothing", {}, registry=registry).text == "null"
    assert dispatch_tool("number", {}, registry=registry).text == "2.5"


def test_huge_result_is_truncated(registry: ToolRegistry) -> None:
    @registry.register
    def huge() -> str:
        return "x" * 50_000

    result = dispatch_tool("huge", {}, registry=registry)
    assert result.ok and result.truncated
    assert result.text.startswith("x" * MAX_RESULT_CHARS)
    assert result.text.endswith(f"[result truncated: {MAX_RESULT_CHARS} of 50000 characters shown]")
    assert len(result.value) == 50_000  # the caller still has the full value


def test_stdout_is_captured_per_thread(registry: ToolRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    barrier = threading.Barrier(2)

    @registry.register
    def chatty(tag: str) -> str:
        for _ in range(50):
            print(tag)
        barrier.wait(5)  # both tools are printing at the same time
        for _ in range(50):
            print(tag)
        return tag

    results: dict[str, ToolResult] = {}

    def run(tag: str) -> None:
        results[tag] = dispatch_tool("chatty", {"tag": tag}, registry=registry)

    threads = [threading.Thread(target=run, args=(tag,)) for tag in ("a", "b")]
    for thread in threads:
        thread.start()
    print("main thread")
    for thread in threads:
        thread.join()

    assert results["a"].stdout == "a\n" * 100
    assert results["b"].stdout == "b\n" * 100
    assert results["a"].text == "a\n\nstdout:\n" + "a\n" * 100
    assert capsys.readouterr().out == "main thread\n"  # neither tool's output leaked out


def test_dispatch_never_raises_even_for_non_string_names(registry: ToolRegistry) -> None:
    result = dispatch_tool(["not", "a", "name"], {}, registry=registry)  # type: ignore[arg-type]
    assert not result.ok
    assert "not found" in result.text


def test_tools_package_stays_independent() -> None:
    """`tools` must import without the UI, the model client, the kernel, or slow libraries."""
    code = (
        "import sys, tools; "
        "print(sorted(m for m in ('streamlit', 'glm_client', 'kernel', 'transformers', 'torch', 'httpx') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
