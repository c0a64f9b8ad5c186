"""Load the operator's own tools: every `.py` file in a directory, whose `@register_tool` calls register them."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

# module name -> the source it ran, so a worker process (tools/isolation.py) runs the same version.
_sources: dict[str, bytes] = {}


@dataclass(frozen=True)
class ToolLoadError:
    """A tools file that could not be imported, and why."""

    file: Path
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


def load_tools_dir(path: str | os.PathLike[str] | None = None) -> list[ToolLoadError]:
    """Import every `.py` file in `path` (None: the TOOLS_DIR setting; "": nothing).

    A broken file is reported and skipped; the others still load. Loading again re-runs
    the files, and a tool registered again under the same name replaces the old one.
    """
    if path is None:
        # Only a caller without settings at hand (a plain `load_tools_dir()`) gets here; the
        # app and CLI pass `settings.tools_dir`. Imported here: `import tools` stays free of glm_client.
        from glm_client.config import Settings

        path = Settings.from_env().tools_dir
    if not os.fspath(path).strip():
        return []
    directory = Path(path).expanduser()
    if not directory.is_dir():
        return [ToolLoadError(directory, "not a directory")]
    return [error for file in sorted(directory.glob("*.py")) if (error := _load_file(file)) is not None]


def _load_file(file: Path) -> ToolLoadError | None:
    # A unique module name per file, so two directories with a `weather.py` don't collide.
    digest = hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:8]
    module_name = f"glm_workbench_user_tools.{file.stem}_{digest}"
    try:
        source = file.read_bytes()
        exec_source(module_name, file, source)
    except BaseException as exc:  # SyntaxError, ImportError, SystemExit, anything at import time
        sys.modules.pop(module_name, None)
        _sources.pop(module_name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        return ToolLoadError(file, _describe(exc, file))
    _sources[module_name] = source
    return None


def exec_source(module_name: str, file: Path, source: bytes) -> ModuleType:
    """Run `source` (the text of `file`) as module `module_name`, registered in sys.modules."""
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None:
        raise ImportError(f"{file} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up here
    # The bytes read once, not the file again: what a worker runs must be what was loaded here.
    exec(compile(source, str(file), "exec", dont_inherit=True), module.__dict__)
    return module


def loaded_source(module_name: str) -> bytes | None:
    """The source a loaded tools file ran as `module_name`, or None for any other module."""
    return _sources.get(module_name)


def _describe(exc: BaseException, file: Path) -> str:
    """`Type: message (line N)`, the line being the last one in the tools file itself."""
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} (line {exc.lineno})"
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(exc.__traceback__)
        if Path(frame.filename).resolve() == file.resolve()
    ]
    where = f" (line {lines[-1]})" if lines else ""
    return f"{type(exc).__name__}: {exc}{where}"
