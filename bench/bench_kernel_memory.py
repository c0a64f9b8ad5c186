"""Which address-space limits (RLIMIT_AS, KERNEL_MEMORY_MB) leave room for the usual imports.

Run: .venv/bin/python bench/bench_kernel_memory.py [--limits-mb 512 1024 1536 2048 3072 4096 0] [--threads 2 16 64]

For each thread count and each limit, a fresh KernelSession (memory_limit_bytes=limit) runs,
in order, the steps below and records whether each succeeded and the kernel's address space
(VmSize, what RLIMIT_AS caps) and resident memory (VmRSS) after it:

1. `import numpy, pandas, matplotlib.pyplot`
2. a 1000x1000 numpy matmul and a saved figure (starts BLAS threads, the Agg renderer)
3. `import torch`
4. a 1000x1000 torch matmul on N threads (starts torch's thread pool)

`--threads N` sets OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and MKL_NUM_THREADS in the kernel's
environment and calls `torch.set_num_threads(N)`, to see what a many-core machine (a stack
and buffers per thread) costs on a small one. (OpenBLAS and torch's default cap the count at
the CPUs present, so only torch's explicit pool really grows here.) A limit of 0 means no limit. The kernel runs unconfined unless `--sandbox bwrap`;
RLIMIT_AS applies alike in both.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernel import KernelSession
from kernel.limits import MiB
from sandbox import SandboxChoice


def steps(threads: int) -> tuple[tuple[str, str], ...]:
    return (
        ("numpy+pandas+matplotlib", "import numpy, pandas, matplotlib.pyplot"),
        (
            "use them",
            "import numpy as np, matplotlib.pyplot as plt\n"
            "a = np.ones((1000, 1000)); a @ a\n"
            "plt.plot([1, 2, 3]); plt.savefig('figure.png'); plt.close('all')",
        ),
        ("import torch", "import torch"),
        ("torch matmul", f"import torch; torch.set_num_threads({threads}); t = torch.ones(1000, 1000); t @ t"),
    )


PROBE = "print(' '.join(line.split()[1] for line in open('/proc/self/status') if line.startswith(('VmSize:', 'VmRSS:', 'Threads:'))))"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def measure(limit_mb: int, threads: int, sandbox: SandboxChoice) -> list[tuple[str, bool, str]]:
    """(step, succeeded, "VmSize/VmRSS MiB, threads" after it) for each step, in one kernel under `limit_mb`."""
    rows = []
    with KernelSession(memory_limit_bytes=limit_mb * MiB or None, sandbox=sandbox) as session:
        failed = False
        for name, code in steps(threads):
            if failed:  # later steps need the earlier ones
                rows.append((name, False, "-"))
                continue
            result = session.execute(code, timeout=300)
            failed = result.status != "ok"
            probe = session.execute(PROBE, timeout=30)
            if probe.status == "ok" and len(probe.text.split()) == 3:
                size_kb, rss_kb, count = (int(part) for part in probe.text.split())
                memory = f"{size_kb // 1024}/{rss_kb // 1024}, {count} threads"
            else:
                memory = "?"
            if failed:
                error = result.text.strip().splitlines()[-1:] or [result.status]
                memory += f"  ({error[0][:70]})"
            rows.append((name, not failed, memory))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limits-mb", type=int, nargs="+", default=[512, 1024, 1536, 2048, 3072, 4096, 0])
    parser.add_argument("--threads", type=int, nargs="+", default=[os.cpu_count() or 1, 16, 64])
    parser.add_argument("--sandbox", choices=("none", "bwrap"), default="none")
    args = parser.parse_args()
    sandbox = SandboxChoice(args.sandbox, "measured unconfined" if args.sandbox == "none" else "")
    print(
        f"{os.cpu_count()} CPUs here, sandbox {args.sandbox}; memory is VmSize/VmRSS in MiB and the kernel's thread count after each step"
    )
    for threads in args.threads:
        for name in THREAD_VARS:
            os.environ[name] = str(threads)  # the kernel inherits the app's environment
        for limit_mb in args.limits_mb:
            label = f"{limit_mb} MiB" if limit_mb else "no limit"
            for step, ok, memory in measure(limit_mb, threads, sandbox):
                print(f"threads {threads:>3}  limit {label:>9}  {step:<24} {'ok' if ok else 'FAIL':<4}  {memory}")
            print(flush=True)


if __name__ == "__main__":
    main()
