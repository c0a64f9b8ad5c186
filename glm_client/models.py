"""The named models a process can switch between, and the pool that keeps some of them loaded.

MODELS_FILE (TOML) names them, one `[models.<name>]` table each: a local model (`path`,
omitted for the embedded one, and optional `engine`, `dtype`, `quantize`, `dialect`) or an
OpenAI-compatible server (`base_url`, `model`, optional `api_key_env`). Without the file the
catalogue is the one model the other settings describe.

`ModelPool` loads a model on first use and keeps at most MAX_LOADED_MODELS local ones,
unloading the least recently used. Clients of servers cost no memory worth counting and
stay. Unloading closes the client: a reply still streaming from it ends with an error
event after the text it already produced (LocalClient.close), and its memory goes back.

This module imports no torch: Settings.from_env reads the file through it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import tomllib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from glm_client.config import DIALECTS, DTYPES, ENGINES, QUANTIZE, ConfigError, Settings

if TYPE_CHECKING:
    from glm_client.client import Client
    from glm_client.engines.base import Progress

ModelKind = Literal["local", "openai"]
Loader = Callable[[Settings, "Progress"], "Client"]

LOCAL_KEYS = ("path", "engine", "dtype", "quantize", "dialect")
REMOTE_KEYS = ("base_url", "api_key_env", "model")
_CHOICES = {"engine": ENGINES, "dtype": DTYPES, "quantize": QUANTIZE, "dialect": DIALECTS}

log = logging.getLogger("glm_client.models")


@dataclass(frozen=True)
class ModelSpec:
    """One named model: where it is and how to run it; `settings()` turns it into the loader's Settings."""

    name: str
    kind: ModelKind = "local"
    # local: path empty means the embedded model; the rest take the values of ENGINE, DTYPE, QUANTIZE, DIALECT
    path: str = ""
    engine: str = "auto"
    dtype: str = "auto"
    quantize: str = "auto"
    dialect: str = "auto"
    # openai: the server, its key (read from the variable api_key_env names) and the model to ask for
    base_url: str = field(default="", repr=False)  # may hold user:password@
    api_key: str = field(default="", repr=False)
    model: str = ""
    thinking_switch: bool = False  # OPENAI_THINKING_SWITCH; only the model configured without a file has it

    def settings(self, base: Settings) -> Settings:
        """`base` with this model in place of the one it configures (device, context length etc. stay)."""
        if self.kind == "openai":
            return dataclasses.replace(
                base,
                openai_base_url=self.base_url,
                openai_api_key=self.api_key,
                openai_model=self.model,
                openai_thinking_switch=self.thinking_switch,
            )
        return dataclasses.replace(
            base,
            model_path=self.path,
            engine=self.engine,
            dtype=self.dtype,
            quantize=self.quantize,
            dialect=self.dialect,
            openai_base_url="",  # what makes load_client pick a server over a local model
        )


class UnknownModel(ValueError):
    """A model name that is not in the catalogue; the message lists the names that are."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"There is no model named {name!r}; the models are: {', '.join(known)}.")
        self.name = name
        self.known = known


# --- MODELS_FILE ------------------------------------------------------------------------


def read_models_file(path: str, env: Mapping[str, str]) -> tuple[ModelSpec, ...]:
    """The models `path` describes, in the file's order; raises ConfigError with one sentence naming table and key.

    A relative `path` of a local model is relative to the file's folder. `api_key_env` is
    resolved in `env` now, so a missing key stops start-up rather than the first request.
    """
    where = f"MODELS_FILE {path}"
    try:
        data = tomllib.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{where} cannot be read: {error.strerror or error}.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is not UTF-8 text; save it as UTF-8.") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{where} is not valid TOML: {error}.") from None
    extra = sorted(set(data) - {"models"})
    if extra:
        raise ConfigError(
            f"{where} has an unknown top-level key {extra[0]!r}; put each model in a [models.<name>] table."
        )
    tables = data.get("models")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{where} describes no models; add a [models.<name>] table for each one.")
    folder = Path(path).expanduser().resolve().parent
    return tuple(_spec(where, name, table, folder, env) for name, table in tables.items())


def _spec(where: str, name: str, table: Any, folder: Path, env: Mapping[str, str]) -> ModelSpec:
    if not name.strip():
        raise ConfigError(f"{where}: a [models.<name>] table has an empty name; give each model a name.")
    at = f"{where}: [models.{name}]" if re.fullmatch(r"[A-Za-z0-9_-]+", name) else f'{where}: [models."{name}"]'
    if not isinstance(table, dict):
        raise ConfigError(f"{at} must be a table of settings, not a single value; write it as [models.{name}].")
    local = [key for key in table if key in LOCAL_KEYS]
    remote = [key for key in table if key in REMOTE_KEYS]
    if local and remote:
        raise ConfigError(
            f"{at} has keys of two kinds, {local[0]!r} (a local model) and {remote[0]!r} (an OpenAI-compatible "
            "server); describe one model per table."
        )
    allowed = LOCAL_KEYS if local else REMOTE_KEYS if remote else LOCAL_KEYS + REMOTE_KEYS
    for key in table:
        if key not in allowed:
            listed = (
                ", ".join(allowed)
                if local or remote
                else f"{', '.join(LOCAL_KEYS)} (a local model) or {', '.join(REMOTE_KEYS)} (a server)"
            )
            raise ConfigError(f"{at} has an unknown key {key!r}; allowed: {listed}.")
    values = {key: _text(at, key, value) for key, value in table.items()}
    if remote:
        return _remote_spec(at, name, values, env)
    for key, choices in _CHOICES.items():
        value = values.get(key, "auto").lower()
        if value not in choices:
            raise ConfigError(
                f"{at} has {key} = {values[key]!r}, which is not valid; use one of: {', '.join(choices)}."
            )
        values[key] = value
    model_path = ""
    if "path" in values:
        if not values["path"]:
            raise ConfigError(f"{at} has an empty path; omit the key for the embedded model.")
        resolved = folder / Path(values["path"]).expanduser()
        if not resolved.exists():
            raise ConfigError(f"{at} has path = {values['path']!r}, which does not exist.")
        model_path = str(resolved)
    return ModelSpec(
        name,
        "local",
        path=model_path,
        engine=values["engine"],
        dtype=values["dtype"],
        quantize=values["quantize"],
        dialect=values["dialect"],
    )


def _remote_spec(at: str, name: str, values: dict[str, str], env: Mapping[str, str]) -> ModelSpec:
    for key in ("base_url", "model"):
        if not values.get(key):
            raise ConfigError(f"{at} is missing the key {key!r}; an OpenAI-compatible server needs base_url and model.")
    base_url = values["base_url"].rstrip("/")
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", base_url, re.IGNORECASE):
        shown = re.sub(r"//[^/@]*@", "//…@", base_url)  # never echo credentials
        raise ConfigError(
            f"{at} has base_url = {shown!r}, which is not valid; use an http(s) URL such as http://127.0.0.1:8000/v1."
        )
    api_key = ""
    if "api_key_env" in values:
        variable = values["api_key_env"]
        api_key = env.get(variable, "").strip()
        if not api_key:
            raise ConfigError(f"{at} has api_key_env = {variable!r}, but that environment variable is not set.")
    return ModelSpec(name, "openai", base_url=base_url, api_key=api_key, model=values["model"])


def _text(at: str, key: str, value: Any) -> str:
    """A table's value as a string; `quantize = 4` written as a number is taken too."""
    if key == "quantize" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ConfigError(f"{at} has {key} = {value!r}; it must be a string in quotes.")
    return value.strip()


# --- the catalogue ----------------------------------------------------------------------


def model_catalogue(settings: Settings) -> tuple[ModelSpec, ...]:
    """The models to offer: MODELS_FILE's, else the one model the other settings configure.

    That one is named as its client will name itself where that is known before loading:
    the embedded model's name, MODEL_PATH's file or folder name, OPENAI_MODEL (else the
    server's host, as the served name is only known once asked).
    """
    if settings.models:
        return settings.models
    if settings.openai_base_url:
        host = re.sub(r"^[a-z]+://([^/@]*@)?", "", settings.openai_base_url, flags=re.IGNORECASE).split("/")[0]
        return (
            ModelSpec(
                settings.openai_model or host or "server",
                "openai",
                base_url=settings.openai_base_url,
                api_key=settings.openai_api_key,
                model=settings.openai_model,
                thinking_switch=settings.openai_thinking_switch,
            ),
        )
    if settings.model_path:
        name = Path(settings.model_path).expanduser().name or settings.model_path
    else:
        from glm_client.embedded import MODEL_NAME as name
    return (
        ModelSpec(
            name,
            "local",
            path=settings.model_path,
            engine=settings.engine,
            dtype=settings.dtype,
            quantize=settings.quantize,
            dialect=settings.dialect,
        ),
    )


# --- the pool ---------------------------------------------------------------------------


def _load_client(settings: Settings, progress: Progress) -> Client:
    from glm_client.loader import load_client  # torch: only when a model is loaded

    return load_client(settings, progress)


def _quiet(_message: str) -> None:
    pass


class ModelPool:
    """The catalogue's models, each loaded on first use; at most `settings.max_loaded_models` local ones stay.

    Thread-safe: concurrent `get`s of one name load it once, and loads of different names
    run side by side. Before a local model loads, the least recently used local ones are
    unloaded to make room (so two never sit in memory at once with the default of 1);
    `load` is the loader (`load_client`; tests inject a fake).

    With more local models in concurrent use than the limit, a reply can end with an
    error because another request unloaded its model: raise MAX_LOADED_MODELS for that.
    """

    def __init__(self, settings: Settings, load: Loader | None = None) -> None:
        self.settings = settings
        self._catalogue = {spec.name: spec for spec in model_catalogue(settings)}
        self._load: Loader = load or _load_client
        self._lock = threading.Lock()
        self._clients: OrderedDict[str, Client] = OrderedDict()  # least recently used first
        self._loading: dict[str, threading.Event] = {}  # set when that load has ended, loaded or failed

    @property
    def names(self) -> list[str]:
        """Every model's name, in the catalogue's order; the first is the default."""
        return list(self._catalogue)

    @property
    def default(self) -> str:
        return next(iter(self._catalogue))

    def spec(self, name: str) -> ModelSpec:
        try:
            return self._catalogue[name]
        except KeyError:
            raise UnknownModel(name, self.names) from None

    def resolve(self, requested: str | None) -> str:
        """The name a request's `model` means: empty → the default; a catalogue name → itself.

        Without MODELS_FILE there is one model, and any name reaches it, as before there
        were several (clients send all sorts of names to a one-model server); with the
        file an unknown name raises UnknownModel.
        """
        if not requested:
            return self.default
        if requested in self._catalogue:
            return requested
        if not self.settings.models:
            return self.default
        raise UnknownModel(requested, self.names)

    def get(self, name: str | None = None, progress: Progress = _quiet) -> Client:
        """The model's client, loaded now if it is not (ModelLoadError or ConfigError if it cannot be)."""
        name = self.default if name is None else name
        spec = self.spec(name)
        while True:
            with self._lock:
                client = self._clients.get(name)
                if client is not None:
                    self._clients.move_to_end(name)
                    return client
                pending = self._loading.get(name)
                if pending is None:
                    done = self._loading[name] = threading.Event()
                    victims = self._evictions(keep=name)
                    break
            pending.wait()  # another thread loads it: take its client, or try ourselves if that failed
        try:
            self._close(victims)
            client = self._load(spec.settings(self.settings), progress)
        except BaseException:
            with self._lock:
                del self._loading[name]
            done.set()
            raise
        with self._lock:
            self._clients[name] = client
            del self._loading[name]
            victims = self._evictions(keep=name)  # a concurrent load of another model may have filled the room
        done.set()
        self._close(victims)
        return client

    def loaded(self) -> list[str]:
        """The names of the models loaded now, in the catalogue's order."""
        with self._lock:
            return [name for name in self._catalogue if name in self._clients]

    def client(self, name: str) -> Client | None:
        """The model's client if it is loaded, without loading it or making it recently used."""
        self.spec(name)
        with self._lock:
            return self._clients.get(name)

    def unload(self, name: str) -> None:
        """Close the model's client and free its memory; the next `get` loads it again. No-op if not loaded."""
        self.spec(name)
        with self._lock:
            client = self._clients.pop(name, None)
        self._close([client] if client is not None else [])

    def close(self) -> None:
        """Unload every model."""
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        self._close(clients)

    def _evictions(self, keep: str) -> list[Client]:
        """Loaded local clients to unload, least recently used first, so that the local models loaded
        and loading (`keep` among them) fit MAX_LOADED_MODELS. Called with the lock held."""
        local = {name for name in (*self._clients, *self._loading) if self._catalogue[name].kind == "local"}
        if keep not in local:
            return []  # a server's client takes no room
        candidates = [name for name in self._clients if name in local and name != keep]
        victims = []
        while len(local) > self.settings.max_loaded_models and candidates:
            name = candidates.pop(0)
            local.discard(name)
            victims.append(self._clients.pop(name))
            log.info("Unloading model %s to make room (MAX_LOADED_MODELS=%d)", name, self.settings.max_loaded_models)
        return victims

    @staticmethod
    def _close(clients: list[Client]) -> None:
        for client in clients:
            close = getattr(client, "close", None)  # Client has no close(); the test fakes need none
            if callable(close):
                try:
                    close()
                except Exception:  # a failing close must not fail the load that evicted it
                    log.exception("Closing the unloaded model failed")
