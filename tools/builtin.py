"""Built-in tools, registered in the default registry on import.

All work offline except `get_weather`, which says so plainly when the network is
unavailable. `shell` runs model-written commands, so it is off unless the operator
sets ENABLE_SHELL_TOOL=1, and each command runs in the same bubblewrap sandbox as a
Code Interpreter kernel, over the session's working directory.
"""

from __future__ import annotations

import datetime
import os
import random
import signal
import subprocess
import urllib.parse
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sandbox import Confinement, Limits, bwrap_command, claim_workdir, configured_sandbox, sandbox_env
from tools import calculator as _calculator
from tools import units as _units
from tools.isolation import time_left
from tools.registry import register_tool
from tools.result import cap_text
from tools.workspace import current_workdir

WEATHER_TIMEOUT_S = 3.0
WEATHER_MAX_REDIRECTS = 3
NETWORK_UNAVAILABLE = "network unavailable: could not reach the weather service"

SHELL_TIMEOUT_S = 20.0
MAX_SHELL_OUTPUT_CHARS = 4_000


# ChatGLM3's demo tools keep their `Annotated[type, "description", required]` signatures.
@register_tool
def random_number_generator(
    seed: Annotated[int, "The random seed used by the generator", True],
    range: Annotated[tuple[int, int], "The range of the generated numbers", True],
) -> int:
    """Generates a random number x, s.t. range[0] <= x <= range[1]"""
    low, high = range
    if low > high:
        raise ValueError(f"range must be [low, high] with low <= high, got [{low}, {high}]")
    return random.Random(seed).randint(low, high)


@register_tool
def get_weather(city_name: Annotated[str, "The name of the city to be queried", True]) -> dict[str, Any] | str:
    """Get the current weather for `city_name`"""
    import httpx  # imported here: only this tool needs it, and it is slow to import

    # Settings read here, at call time: a tool gets only its arguments, and this one runs in a
    # worker process that receives the app's environment with each call (tools/isolation.py).
    # Imported here: `import tools` stays free of glm_client.
    from glm_client.config import Settings

    url = Settings.from_env().weather_api_url.format(city=_url_segment(city_name))
    try:
        with httpx.Client(timeout=WEATHER_TIMEOUT_S, follow_redirects=False) as client:
            response = client.get(url)
            # Redirects only within the weather service's origin: never to another host or port.
            for _ in range(WEATHER_MAX_REDIRECTS):
                target = response.next_request
                if target is None:
                    break
                if _origin(target.url) != _origin(response.request.url):
                    return f"weather service error: a redirect for {city_name!r} leads off the service's host and was not followed"
                response = client.send(target)
    except httpx.HTTPError as exc:
        return f"{NETWORK_UNAVAILABLE} ({type(exc).__name__})"
    if response.status_code != 200:
        return f"weather service error: HTTP {response.status_code} for {city_name!r}"
    try:
        current = response.json()["current_condition"][0]
        return {
            "city": city_name,
            "temperature_c": current["temp_C"],
            "feels_like_c": current["FeelsLikeC"],
            "humidity_percent": current["humidity"],
            "description": current["weatherDesc"][0]["value"],
            "observation_time_utc": current["observation_time"],
        }
    except (ValueError, KeyError, IndexError, TypeError):
        return f"weather service error: unexpected response for {city_name!r}"


def _url_segment(text: str) -> str:
    """`text` as one URL path segment (or query value): `/`, `?`, `#` escaped, and `.`/`..` too.

    `quote`'s default keeps `/`, so a city named `../../admin` would reach `/admin`; a
    bare `.` or `..` segment would be collapsed by URL normalisation.
    """
    quoted = urllib.parse.quote(text, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def _origin(url: Any) -> tuple[str, str, int | None]:
    default_port = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default_port


@register_tool
def get_current_time(timezone: str = "UTC") -> str:
    """Get the current date and time in a time zone.

    Args:
        timezone: IANA time zone name, such as "Europe/Berlin", "Asia/Shanghai" or "UTC".
    """
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r}; use an IANA name such as 'Europe/Berlin' or 'UTC'") from None
    now = datetime.datetime.now(zone)
    return f"{now.isoformat(timespec='seconds')} ({now:%A}, {timezone})"


@register_tool
def calculator(expression: str) -> int | float:
    """Evaluate an arithmetic expression exactly, e.g. "(3 + 4) * 2 ** 10" or "sqrt(2) * pi".

    Args:
        expression: Numbers with + - * / // % ** and parentheses; functions sqrt, cbrt, exp, log,
            log10, log2, sin, cos, tan, asin, acos, atan, abs, round, floor, ceil; constants pi, e, tau.
    """
    return _calculator.evaluate(expression)


@register_tool
def unit_convert(value: float, from_unit: str, to_unit: str) -> float:
    """Convert a quantity between units of length, mass, time, volume, speed, data size or temperature.

    Args:
        value: The quantity to convert.
        from_unit: Unit of `value`, e.g. "km", "lb", "°F", "min", "GiB".
        to_unit: Unit to convert to; must measure the same kind of thing.
    """
    return _units.convert(value, from_unit, to_unit)


# Runs in a thread of the app, not a worker process: it only starts a sandboxed subprocess
# and waits for it, killing the subprocess's group at its own timeout (cut to the call's
# time left), so it never holds the GIL, and a worker would add nothing but its start-up.
@register_tool(dangerous=True, isolated=False)
def shell(command: str) -> str:
    """Run a shell command in the working directory and return its exit code and output.

    Args:
        command: The command line, run with /bin/sh.
    """
    choice = configured_sandbox()
    if choice.mode == "refused":
        raise PermissionError(choice.reason)
    workdir = current_workdir()
    argv = ["/bin/sh", "-c", command]
    if choice.sandboxed:
        from glm_client.config import Settings  # here: `import tools` stays free of glm_client

        limits = Limits(memory_bytes=Settings.from_env().kernel_memory_mb * 1024 * 1024)
        argv = bwrap_command(Confinement(workdir, limits, claim_workdir(workdir)), argv)
    # A new session, so a timeout can kill the whole process group (bwrap takes the sandbox with it).
    with subprocess.Popen(
        argv,
        cwd=workdir,
        env=sandbox_env({}),  # never the app's environment, sandboxed or not
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    ) as process:
        left = time_left()
        limit = SHELL_TIMEOUT_S if left is None else min(SHELL_TIMEOUT_S, left)
        try:
            output, _ = process.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise TimeoutError(f"command did not finish within {limit:g} s") from None
    output, _ = cap_text(output, MAX_SHELL_OUTPUT_CHARS)
    return f"exit code {process.returncode}\n{output}"
