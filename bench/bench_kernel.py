"""How much KernelSession costs over raw jupyter_client, and what pre-warming saves.

Run: .venv/bin/python bench/bench_kernel.py [--runs 100] [--starts 3]

1. Round trip of `1+1`: KernelSession.execute vs a raw BlockingKernelClient on its own
   kernel, launched with the same command and environment (execute, then read IOPub
   until this request's idle status). Runs are interleaved so machine noise hits both
   alike. Target: ours <= 1.1x raw. (A kernel from the default kernelspec is slower
   still: it writes every cell to IPython's history database, which ours turns off.)
2. First-execution latency: pre-warmed (start(), then time execute) vs cold (time
   constructing a session plus its first execute, which launches the kernel).
3. The bubblewrap sandbox: round trip and cold start of a sandboxed session against an
   unsandboxed one, interleaved. Targets: round trip <= 1.1x, cold start <= +0.3 s.
4. A kernel on a Jupyter Kernel Gateway: round trip of `1+1` through a GatewayKernelSession
   (REST start, websocket channels) against a local KernelSession, both unsandboxed,
   interleaved. The gateway is KERNEL_GATEWAY_URL (+ KERNEL_GATEWAY_TOKEN) if set, else a
   jupyter-kernelgateway started here on 127.0.0.1 with a token. Target: <= 2x local.
(1 and 2 run unsandboxed, as the raw client's kernel does.)
Only the gateway figures: --gateway-only.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from jupyter_client import BlockingKernelClient, KernelManager
from jupyter_client.kernelspec import KernelSpec

from kernel import KernelSession
from kernel.gateway import GatewayConfig, GatewayKernelSession, configured_gateway
from kernel.process import kernel_env, kernel_spec
from sandbox import SandboxChoice, bwrap_problem

CODE = "1+1"
SANDBOXED = SandboxChoice("bwrap")
UNCONFINED = SandboxChoice("none", "the raw client's kernel is unconfined too")


def raw_execute(client: BlockingKernelClient) -> None:
    """The minimal correct client loop: send, then wait for this request's idle status."""
    msg_id = client.execute(CODE, allow_stdin=False)
    while True:
        msg = client.get_iopub_msg(timeout=10)
        if (
            msg["parent_header"].get("msg_id") == msg_id
            and msg["msg_type"] == "status"
            and msg["content"]["execution_state"] == "idle"
        ):
            return


class SameKernelManager(KernelManager):
    """Launches exactly the kernel KernelSession launches, so only the client code differs."""

    @property
    def kernel_spec(self) -> KernelSpec:
        return kernel_spec()


def round_trips(runs: int) -> tuple[list[float], list[float]]:
    runtime_dir = tempfile.mkdtemp(prefix="bench-raw-kernel-")
    manager = SameKernelManager(transport="ipc", connection_file=f"{runtime_dir}/kernel.json")
    manager.start_kernel(env=kernel_env())
    client = manager.client()
    client.start_channels(stdin=False, hb=False, control=False)  # the channels KernelSession uses
    client.wait_for_ready(timeout=60)
    ours, raw = [], []
    try:
        with KernelSession(sandbox=UNCONFINED) as session:
            for _ in range(10):  # warm up both kernels and both code paths
                session.execute(CODE)
                raw_execute(client)
            for run in range(runs):
                # Alternate who goes first: a kernel still settling after its reply slows the next one.
                for which in ("ours", "raw") if run % 2 else ("raw", "ours"):
                    started = time.perf_counter()
                    if which == "ours":
                        result = session.execute(CODE)
                        ours.append(time.perf_counter() - started)
                        assert result.text == "2", result.to_observation()
                    else:
                        raw_execute(client)
                        raw.append(time.perf_counter() - started)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    return ours, raw


def first_executions(starts: int) -> tuple[list[float], list[float]]:
    warm, cold = [], []
    for _ in range(starts):
        with KernelSession(sandbox=UNCONFINED) as session:  # __enter__ starts the kernel
            started = time.perf_counter()
            session.execute(CODE)
            warm.append(time.perf_counter() - started)
        cold.append(cold_start(UNCONFINED))
    return warm, cold


def cold_start(sandbox: SandboxChoice) -> float:
    """Construct a session and run its first cell, which launches the kernel."""
    started = time.perf_counter()
    session = KernelSession(sandbox=sandbox)
    result = session.execute(CODE)
    elapsed = time.perf_counter() - started
    session.shutdown()
    assert result.text == "2", result.to_observation()
    return elapsed


def sandbox_costs(runs: int, starts: int) -> tuple[list[float], list[float], list[float], list[float]]:
    """Round trips and cold starts, sandboxed and not, taking turns."""
    boxed, free = [], []
    with KernelSession(sandbox=SANDBOXED) as sandboxed, KernelSession(sandbox=UNCONFINED) as unconfined:
        for _ in range(10):
            sandboxed.execute(CODE)
            unconfined.execute(CODE)
        for run in range(runs):
            for session, times in [(sandboxed, boxed), (unconfined, free)][:: 1 if run % 2 else -1]:
                started = time.perf_counter()
                session.execute(CODE)
                times.append(time.perf_counter() - started)
    cold_boxed, cold_free = [], []
    for start in range(starts):
        for sandbox, times in [(SANDBOXED, cold_boxed), (UNCONFINED, cold_free)][:: 1 if start % 2 else -1]:
            times.append(cold_start(sandbox))
    return boxed, free, cold_boxed, cold_free


@contextmanager
def kernel_gateway() -> Iterator[GatewayConfig]:
    """The configured gateway, or a jupyter-kernelgateway on a free local port with a fresh token."""
    configured = configured_gateway()
    if configured is not None:
        yield configured
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = secrets.token_hex(16)
    env = dict(os.environ, KG_AUTH_TOKEN=token)
    process = subprocess.Popen(
        [sys.executable, "-m", "kernel_gateway", "--KernelGatewayApp.ip=127.0.0.1", f"--KernelGatewayApp.port={port}"],
        cwd=tempfile.mkdtemp(prefix="bench-gateway-"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{url}/api", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield GatewayConfig(url=url, token=token)
    finally:
        process.terminate()
        process.wait(30)


def gateway_costs(runs: int) -> tuple[list[float], list[float], float, float]:
    """Round trips through the gateway and locally, interleaved; and one cold start of each."""
    remote_times, local_times = [], []
    with kernel_gateway() as config:
        started = time.perf_counter()
        remote = GatewayKernelSession(gateway=config)
        assert remote.execute(CODE).text == "2"
        cold_remote = time.perf_counter() - started
        cold_local = cold_start(UNCONFINED)
        with remote, KernelSession(sandbox=UNCONFINED) as local:
            for _ in range(10):
                remote.execute(CODE)
                local.execute(CODE)
            for run in range(runs):
                for session, times in [(remote, remote_times), (local, local_times)][:: 1 if run % 2 else -1]:
                    started = time.perf_counter()
                    result = session.execute(CODE)
                    times.append(time.perf_counter() - started)
                    assert result.text == "2", result.to_observation()
    return remote_times, local_times, cold_remote, cold_local


def print_gateway(runs: int) -> None:
    remote, local, cold_remote, cold_local = gateway_costs(runs)
    print(f"Kernel gateway, median of {runs} interleaved round trips of {CODE!r}")
    print(
        f"  through the gateway (websocket)  {ms(statistics.median(remote))}   (p90 {ms(sorted(remote)[int(0.9 * len(remote))])})"
    )
    print(
        f"  local KernelSession              {ms(statistics.median(local))}   (p90 {ms(sorted(local)[int(0.9 * len(local))])})"
    )
    print(
        f"  ratio gateway / local            {statistics.median(remote) / statistics.median(local):8.2f} x   (target <= 2.00 x)"
    )
    print(f"  cold start + first run: gateway {ms(cold_remote)}, local {ms(cold_local)}")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100, help="round trips per client (default 100)")
    parser.add_argument("--starts", type=int, default=3, help="kernel starts per first-run case (default 3)")
    parser.add_argument("--gateway-only", action="store_true", help="only the kernel gateway figures (4)")
    args = parser.parse_args()
    if args.gateway_only:
        print_gateway(args.runs)
        return

    ours, raw = round_trips(args.runs)
    ratio = statistics.median(ours) / statistics.median(raw)
    print(f"Round trip of {CODE!r}, median of {args.runs} interleaved runs")
    print(f"  KernelSession.execute     {ms(statistics.median(ours))}   (p90 {ms(sorted(ours)[int(0.9 * len(ours))])})")
    print(f"  raw BlockingKernelClient  {ms(statistics.median(raw))}   (p90 {ms(sorted(raw)[int(0.9 * len(raw))])})")
    print(f"  ratio ours / raw          {ratio:8.2f} x   (target <= 1.10 x)")

    warm, cold = first_executions(args.starts)
    print(f"First execution, median of {args.starts} kernels")
    print(f"  pre-warmed (start() first)  {ms(statistics.median(warm))}")
    print(f"  cold (construct + execute)  {ms(statistics.median(cold))}")

    print_gateway(args.runs)

    if problem := bwrap_problem():
        print(f"Sandbox figures skipped: {problem}")
        return
    boxed, free, cold_boxed, cold_free = sandbox_costs(args.runs, args.starts)
    print(f"Sandbox (bubblewrap), medians of {args.runs} round trips and {args.starts} cold starts, interleaved")
    print(f"  round trip sandboxed        {ms(statistics.median(boxed))}")
    print(f"  round trip unsandboxed      {ms(statistics.median(free))}")
    print(
        f"  ratio                       {statistics.median(boxed) / statistics.median(free):8.2f} x   (target <= 1.10 x)"
    )
    print(f"  cold start sandboxed        {ms(statistics.median(cold_boxed))}")
    print(f"  cold start unsandboxed      {ms(statistics.median(cold_free))}")
    extra = statistics.median(cold_boxed) - statistics.median(cold_free)
    print(f"  difference                  {ms(extra)}   (target <= +300 ms)")


if __name__ == "__main__":
    main()
