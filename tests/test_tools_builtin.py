"""The built-in tools, called through dispatch_tool as the model would call them. No network."""

from __future__ import annotations

import datetime
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools import dispatch_tool, get_tools
from tools.calculator import CalculatorError, evaluate
from tools.units import UnitError, convert


def closed_port() -> int:
    """A local port nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def offline_weather() -> Iterator[None]:
    """Point get_weather at a closed port for every test here, so nothing reaches the internet."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WEATHER_API_URL", f"http://127.0.0.1:{closed_port()}/{{city}}?format=j1")
        patch.delenv("ENABLE_SHELL_TOOL", raising=False)
        yield


# --- calculator ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 // 2", 3),
        ("7 % 3", 1),
        ("-2 ** 2", -4),
        ("2 ** -1", 0.5),
        ("10 / 4", 2.5),
        ("sqrt(16) + abs(-2)", 6.0),
        ("log(8, 2)", 3.0),
        ("round(pi, 2)", 3.14),
        ("round(123456, -3)", 123000),
        ("round(10 ** 1000, -1234)", 0),
        ("2 ** 100", 2**100),
    ],
)
def test_calculator_arithmetic(expression: str, expected: float) -> None:
    assert evaluate(expression) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os')", "function '__import__' is not allowed"),
        ("().__class__.__bases__", "unsupported syntax"),
        ("open('/etc/passwd')", "function 'open' is not allowed"),
        ("x + 1", "unknown name 'x'"),
        ("'a' * 3", "only numbers are allowed"),
        ("[1, 2]", "unsupported syntax: List"),
        ("2 ** 10 ** 10", "result is too large"),
        ("9 ** 9 ** 9", "result is too large"),
        ("10 ** 10 ** 7", "result is too large"),
        ("round(1, -10 ** 7)", "round: ndigits must be between -1234 and 1234"),
        ("round(1, -2 * 10 ** 7)", "round: ndigits must be between -1234 and 1234"),
        ("round(2.5, 10 ** 9)", "round: ndigits must be between"),
        ("2 ** 4095 * 2", "result is too large"),
        ("1 << 10", "unsupported syntax"),
        ("10 ** 1000 / 3", "result is too large"),
        ("1 / 0", "division by zero"),
        ("sqrt(-1)", "sqrt: math domain error"),
        ("(-8) ** 0.5", "complex"),
        ("2 ^ 3", "use ** for powers"),
        ("1 +", "not a valid expression"),
        ("-" * 999 + "1", "nested too deeply"),
        ("(" * 300 + "1" + ")" * 300, "not a valid expression"),
        ("1" * 2000, "too long"),
    ],
)
def test_calculator_rejects(expression: str, message: str) -> None:
    started = time.perf_counter()
    with pytest.raises(CalculatorError, match=message.replace("(", r"\(").replace("*", r"\*")):
        evaluate(expression)
    assert time.perf_counter() - started < 1


def test_calculator_through_dispatch() -> None:
    assert dispatch_tool("calculator", {"expression": "(3 + 4) * 2 ** 10"}).text == "7168"
    bad = dispatch_tool("calculator", {"expression": "__import__('os').system('echo hi')"})
    assert not bad.ok
    assert bad.text.startswith("Tool `calculator` raised CalculatorError: function ")
    assert "__import__" in bad.text and "is not allowed" in bad.text


# --- unit_convert ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "from_unit", "to_unit", "expected"),
    [
        (1, "mile", "km", 1.609344),
        (3, "ft", "in", 36),
        (1, "kg", "lb", 2.20462262185),
        (16, "oz", "lb", 1),
        (100, "°C", "F", 212),
        (32, "Fahrenheit", "celsius", 0),
        (0, "K", "C", -273.15),
        (90, "minutes", "h", 1.5),
        (1, "day", "s", 86400),
        (1, "GiB", "MiB", 1024),
        (1, "GB", "MB", 1000),
        (8, "bit", "B", 1),
        (1, "gallon", "l", 3.785411784),
        (100, "km/h", "m/s", 27.7777777778),
    ],
)
def test_unit_conversions(value: float, from_unit: str, to_unit: str, expected: float) -> None:
    assert convert(value, from_unit, to_unit) == pytest.approx(expected)


def test_incompatible_and_unknown_units() -> None:
    with pytest.raises(UnitError, match=r"cannot convert kg \(mass\) to m \(length\)"):
        convert(1, "kg", "m")
    with pytest.raises(UnitError, match="unknown unit 'furlong'"):
        convert(1, "furlong", "m")
    result = dispatch_tool("unit_convert", {"value": 5, "from_unit": "s", "to_unit": "GB"})
    assert not result.ok and "cannot convert s (time) to GB (data size)" in result.text


def test_unit_convert_through_dispatch() -> None:
    result = dispatch_tool("unit_convert", '{"value": 10, "from_unit": "km", "to_unit": "mi"}')
    assert result.ok
    assert result.value == pytest.approx(6.21371192237)


# --- time, random, weather, shell ---------------------------------------------------------------


def test_current_time_in_a_zone() -> None:
    result = dispatch_tool("get_current_time", {"timezone": "Asia/Shanghai"})
    assert result.ok
    stamp = datetime.datetime.fromisoformat(result.text.split(" ")[0])
    assert stamp.utcoffset() == datetime.timedelta(hours=8)
    assert abs((stamp - datetime.datetime.now(datetime.UTC)).total_seconds()) < 60
    assert result.text.endswith(", Asia/Shanghai)")
    assert dispatch_tool("get_current_time", {}).text.endswith(", UTC)")


def test_unknown_time_zone() -> None:
    result = dispatch_tool("get_current_time", {"timezone": "Mars/Olympus_Mons"})
    assert not result.ok
    assert "unknown time zone 'Mars/Olympus_Mons'" in result.text


def test_random_number_generator_keeps_chatglm3_semantics() -> None:
    first = dispatch_tool("random_number_generator", {"seed": 42, "range": [1, 100]})
    again = dispatch_tool("random_number_generator", '{"seed": 42, "range": [1, 100]}')
    assert first.ok and first.value == again.value  # seeded: reproducible
    assert 1 <= first.value <= 100
    assert dispatch_tool("random_number_generator", {"seed": 1, "range": [7, 7]}).value == 7
    assert not dispatch_tool("random_number_generator", {"seed": 1, "range": [1, 2, 3]}).ok
    assert "low <= high" in dispatch_tool("random_number_generator", {"seed": 1, "range": [9, 1]}).text


def test_weather_offline_reports_network_unavailable_quickly() -> None:
    started = time.perf_counter()
    result = dispatch_tool("get_weather", {"city_name": "Beijing"})
    assert time.perf_counter() - started < 5
    assert result.text.startswith("network unavailable: could not reach the weather service")


class WeatherService:
    """A real HTTP server on 127.0.0.1 that records the paths it is asked for."""

    def __init__(self, respond: Callable[[str], tuple[int, dict[str, str], bytes]]) -> None:
        self.paths: list[str] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                service.paths.append(self.path)
                status, headers, body = respond(self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


WEATHER_JSON = json.dumps(
    {
        "current_condition": [
            {
                "temp_C": "21",
                "FeelsLikeC": "20",
                "humidity": "40",
                "weatherDesc": [{"value": "Sunny"}],
                "observation_time": "10:00 AM",
            }
        ]
    }
).encode()


@pytest.fixture
def weather_service() -> Iterator[WeatherService]:
    service = WeatherService(lambda path: (200, {"Content-Type": "application/json"}, WEATHER_JSON))
    yield service
    service.close()


@pytest.mark.parametrize("city", ["../../admin", "..", "a/b?c=d#e", "São Paulo"])
def test_weather_city_stays_one_path_segment(
    weather_service: WeatherService, monkeypatch: pytest.MonkeyPatch, city: str
) -> None:
    monkeypatch.setenv("WEATHER_API_URL", f"http://127.0.0.1:{weather_service.port}/weather/{{city}}?format=j1")
    result = dispatch_tool("get_weather", {"city_name": city})
    assert result.ok and result.value["description"] == "Sunny", result.text
    [path] = weather_service.paths
    parsed = urllib.parse.urlsplit(path)
    assert parsed.query == "format=j1"
    prefix, segment = parsed.path.rsplit("/", 1)
    assert prefix == "/weather"  # `../../admin` did not climb out
    assert urllib.parse.unquote(segment) == city


def test_weather_follows_no_redirect_to_another_host(monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = WeatherService(lambda path: (200, {"Content-Type": "application/json"}, WEATHER_JSON))
    redirecting = WeatherService(
        lambda path: (302, {"Location": f"http://127.0.0.1:{elsewhere.port}/internal{path}"}, b"")
    )
    try:
        monkeypatch.setenv("WEATHER_API_URL", f"http://127.0.0.1:{redirecting.port}/{{city}}?format=j1")
        result = dispatch_tool("get_weather", {"city_name": "Paris"})
    finally:
        redirecting.close()
        elsewhere.close()
    assert redirecting.paths == ["/Paris?format=j1"]
    assert elsewhere.paths == []  # another port of the same machine is another service
    assert (
        result.text == "weather service error: a redirect for 'Paris' leads off the service's host and was not followed"
    )


def test_weather_follows_a_redirect_within_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    def respond(path: str) -> tuple[int, dict[str, str], bytes]:
        if path.startswith("/old/"):
            return 301, {"Location": path.replace("/old/", "/new/", 1)}, b""
        return 200, {"Content-Type": "application/json"}, WEATHER_JSON

    service = WeatherService(respond)
    try:
        monkeypatch.setenv("WEATHER_API_URL", f"http://127.0.0.1:{service.port}/old/{{city}}?format=j1")
        result = dispatch_tool("get_weather", {"city_name": "Oslo"})
    finally:
        service.close()
    assert result.ok and result.value["city"] == "Oslo"
    assert service.paths == ["/old/Oslo?format=j1", "/new/Oslo?format=j1"]


def test_shell_is_disabled_by_default() -> None:
    assert "shell" not in {schema["function"]["name"] for schema in get_tools()}
    result = dispatch_tool("shell", {"command": "echo hacked"})
    assert not result.ok
    assert result.text == "Tool `shell` is disabled by the operator (set ENABLE_SHELL_TOOL=1 to enable it)."


def test_shell_runs_when_the_operator_enables_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENABLE_SHELL_TOOL", "1")
    assert "shell" in {schema["function"]["name"] for schema in get_tools()}
    result = dispatch_tool("shell", {"command": "echo out; echo err >&2; exit 3"})
    assert result.ok
    assert result.text == "exit code 3\nout\nerr\n"


def test_shell_command_timeout_kills_the_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    import tools.builtin

    monkeypatch.setenv("ENABLE_SHELL_TOOL", "1")
    monkeypatch.setattr(tools.builtin, "SHELL_TIMEOUT_S", 0.2)
    started = time.perf_counter()
    result = dispatch_tool("shell", {"command": "sleep 30 | cat"})
    assert time.perf_counter() - started < 5
    assert result.text == "Tool `shell` raised TimeoutError: command did not finish within 0.2 s"


# --- property: dispatch never raises -----------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
tool_names = st.sampled_from(
    ["calculator", "get_current_time", "random_number_generator", "unit_convert", "get_weather", "shell"]
) | st.text(max_size=20)
argument_names = st.sampled_from(
    ["expression", "timezone", "seed", "range", "value", "from_unit", "to_unit"]
) | st.text(max_size=10)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=tool_names,
    arguments=st.dictionaries(argument_names, json_values, max_size=4) | st.text(max_size=30) | json_values,
)
def test_dispatch_never_raises(name: str, arguments: object) -> None:
    result = dispatch_tool(name, arguments, timeout=2.0)  # type: ignore[arg-type]
    assert isinstance(result.text, str) and result.text
    assert result.ok == (result.error is None)
