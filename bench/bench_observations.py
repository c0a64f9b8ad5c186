"""What a Code Interpreter round reads back: the model's tokens of a cell's result, condensed and not.

    .venv/bin/python bench/bench_observations.py

Runs cells like those the embedded model wrote in a load run (bench_load.py: plots whose x and y
differ in size, a font that is not installed, a JSON error, a NameError) in a real sandboxed
kernel, and prints for each the tokens of its observation (`ExecutionResult.to_observation`, in
the embedded model's tokenizer) as the model reads it now, and with every library frame's full
path and every repeated line written out (kernel/text.py's two steps turned off, the same
result); then the totals and their ratio. Every observation is prefilled once per round, and
stays in the context for the rounds after it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers import AutoTokenizer

import kernel.text
from glm_client.config import Settings
from glm_client.embedded import ensure_cache
from kernel import KernelSession
from kernel.result import ExecutionResult
from sandbox import SandboxChoice

PLOT = "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\n"
CELLS = {
    "scatter, sizes differ": PLOT + "ax.scatter(range(10), [1, 2, 3])",
    "plot, shapes differ": PLOT + "plt.plot(range(0, 4), [x**2 for x in range(1, 6)])",
    "a missing font": "import matplotlib.pyplot as plt\nplt.rcParams['font.family'] = 'Times New Roman'\n"
    "plt.plot([1, 2, 3])\nplt.title('t')",
    "JSON error": "import json\njson.loads('{')",
    "NameError": "print(np.arange(3))",
}


def uncondensed(result: ExecutionResult) -> str:
    """The observation with library frames' full paths and every repeated line."""
    prefix, repeats = kernel.text._LIBRARY_PREFIX, kernel.text.MIN_REPEATS_TO_COUNT
    kernel.text._LIBRARY_PREFIX, kernel.text.MIN_REPEATS_TO_COUNT = re.compile(r"(?!)"), sys.maxsize
    try:
        return result.to_observation()
    finally:
        kernel.text._LIBRARY_PREFIX, kernel.text.MIN_REPEATS_TO_COUNT = prefix, repeats


def main() -> None:
    tokenizer = AutoTokenizer.from_pretrained(ensure_cache(Settings.from_env().cache_dir))

    def tokens(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    print("| cell | tokens read now | uncondensed | uncondensed / now |\n|---|---|---|---|")
    totals = [0, 0]
    with KernelSession(sandbox=SandboxChoice("bwrap")) as session:
        for name, code in CELLS.items():
            result = session.execute(code)
            now, before = tokens(result.to_observation()), tokens(uncondensed(result))
            totals = [totals[0] + now, totals[1] + before]
            print(f"| {name} | {now} | {before} | {before / now:.2f}x |")
    print(f"| all | {totals[0]} | {totals[1]} | **{totals[1] / totals[0]:.2f}x** |")


if __name__ == "__main__":
    main()
