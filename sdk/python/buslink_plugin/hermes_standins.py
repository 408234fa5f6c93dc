"""Stand-ins for the parts of Hermes a messagebus consumer plugin imports, for running an
unchanged Hermes plugin without Hermes installed: `lib.plugins.AbstractMessageBusConsumerPlugin`,
`lib.datamodel.event.Event` and the builtin `__hermes__.logger`. Written from the consumer
contract (what a plugin may rely on), not from Hermes's code: a plugin that uses more of
Hermes's `lib` needs `hermes_root` (Hermes's own `lib`, with its requirements installed).
"""

import base64
import builtins
import json
import logging
import re
import sys
import types
from datetime import datetime
from typing import Any, Dict, Optional

_LEVELS = {
    logging.CRITICAL: "Error",
    logging.ERROR: "Error",
    logging.WARNING: "Warn",
    logging.INFO: "Info",
    logging.DEBUG: "Debug",
}


class _StderrHandler(logging.Handler):
    """Log records as `[Level] text` lines on standard error (buslink's log)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = _LEVELS.get(record.levelno, "Info")
            for line in self.format(record).splitlines() or [""]:
                sys.stderr.write(f"[{level}] {line}\n")
            sys.stderr.flush()
        except Exception:  # a log line must never kill the plugin
            pass


def hermes_logger() -> logging.Logger:
    """The logger a plugin reaches as `__hermes__.logger`."""
    logger = logging.getLogger("hermes")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    return logger


def install_hermes_builtin() -> None:
    """`__hermes__.logger` as a builtin, as Hermes's own start does."""
    if not hasattr(builtins, "__hermes__"):
        builtins.__hermes__ = types.SimpleNamespace(logger=hermes_logger())  # type: ignore[attr-defined]


class AbstractMessageBusConsumerPlugin:
    """The class a Hermes consumer plugin extends: built from its settings dict (kept as a copy
    in `_settings`); `with` opens and closes it."""

    def __init__(self, settings: Dict[str, Any]):
        self._settings = dict(settings)

    def __enter__(self) -> "AbstractMessageBusConsumerPlugin":
        self.open()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb) -> bool:
        try:
            self.close()
        except Exception as error:
            hermes_logger().error(f"error while closing the bus: {error}")
        return False

    def open(self) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def seekToBeginning(self) -> None:
        raise NotImplementedError

    def seek(self, offset: Any) -> None:
        raise NotImplementedError

    def setTimeout(self, timeout_ms: Optional[int]) -> None:
        raise NotImplementedError

    def findNextEventOfCategory(self, category: str) -> Any:
        raise NotImplementedError

    def __iter__(self):
        raise NotImplementedError


_DATETIME = re.compile(r"HermesDatetime\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})Z\)")
_BYTES = re.compile(r"HermesBytes\(([^)]*)\)")
_KEYS = ["evcategory", "eventtype", "objtype", "objpkey", "objattrs", "step", "isPartiallyProcessed"]


def _decode(value: Any) -> Any:
    """Hermes's special strings back to values: `HermesDatetime(...Z)`, `HermesBytes(...)`."""
    if isinstance(value, str):
        found = _DATETIME.fullmatch(value)
        if found:
            return datetime.fromisoformat(found.group(1))  # naive UTC, as Hermes reads it
        found = _BYTES.fullmatch(value)
        if found:
            return base64.b64decode(found.group(1))
        return value
    if isinstance(value, list):
        return [_decode(item) for item in value]
    if isinstance(value, dict):
        return {key: _decode(item) for key, item in value.items()}
    return value


class _Encoder(json.JSONEncoder):
    """Datetimes, bytes and sets as Hermes writes them (tuples are lists already)."""

    def default(self, value: Any) -> Any:
        if isinstance(value, datetime):
            # The zone is dropped, not converted: Hermes's datetimes are UTC already.
            plain = value.replace(tzinfo=None)
            return f"HermesDatetime({plain.isoformat(timespec='seconds')}Z)"
        if isinstance(value, (bytes, bytearray)):
            return f"HermesBytes({base64.b64encode(bytes(value)).decode('ascii')})"
        if isinstance(value, (set, frozenset)):
            return sorted(value)
        return super().default(value)


class Event:
    """A Hermes event: `evcategory`, `eventtype`, `objtype`, `objpkey`, `objattrs`, `step`,
    `isPartiallyProcessed`, and the two attributes a consumer plugin sets and that are not part
    of the body: `offset` and `timestamp`."""

    def __init__(self, evcategory=None, eventtype=None, obj=None, objattrs=None, from_json_dict=None):
        if objattrs is None and from_json_dict is None:
            raise AttributeError("an Event needs objattrs or from_json_dict")
        self.offset: Any = None
        self.timestamp: datetime = datetime(year=1, month=1, day=1)
        self.step = 0
        self.isPartiallyProcessed = False
        self.evcategory = evcategory
        self.eventtype = eventtype
        self.objtype = None
        self.objpkey = None
        self.objattrs = objattrs
        if from_json_dict is not None:
            for key in _KEYS:
                if key in from_json_dict:
                    setattr(self, key, from_json_dict[key])
            if isinstance(self.objpkey, list):
                self.objpkey = tuple(self.objpkey)
            if "isPartiallyProcessed" not in from_json_dict:
                self.isPartiallyProcessed = from_json_dict.get("step", 0) != 0

    @classmethod
    def from_json(cls, data: Any) -> "Event":
        """From JSON text or an already parsed dict."""
        if isinstance(data, (str, bytes, bytearray)):
            data = json.loads(data)
        if not isinstance(data, dict):
            raise ValueError(f"an event's JSON is an object, not {type(data).__name__}")
        return cls(from_json_dict=_decode(data))

    def to_json(self) -> str:
        """The event's body, as Hermes writes it (indented, its seven keys)."""
        data = {key: getattr(self, key, None) for key in _KEYS}
        if isinstance(data["objpkey"], tuple):
            data["objpkey"] = list(data["objpkey"])
        return json.dumps(data, cls=_Encoder, indent=4)

    def __repr__(self) -> str:
        return f"<Event({self.evcategory}_{self.eventtype}, {self.objtype}, {self.objpkey})>"


def install_standins() -> None:
    """Registers the stand-in modules `lib`, `lib.plugins`, `lib.datamodel` and
    `lib.datamodel.event`, and the `__hermes__` builtin."""
    install_hermes_builtin()
    lib = types.ModuleType("lib")
    lib.__path__ = []  # type: ignore[attr-defined]
    plugins = types.ModuleType("lib.plugins")
    plugins.AbstractMessageBusConsumerPlugin = AbstractMessageBusConsumerPlugin  # type: ignore[attr-defined]
    datamodel = types.ModuleType("lib.datamodel")
    datamodel.__path__ = []  # type: ignore[attr-defined]
    event = types.ModuleType("lib.datamodel.event")
    event.Event = Event  # type: ignore[attr-defined]
    lib.plugins = plugins  # type: ignore[attr-defined]
    lib.datamodel = datamodel  # type: ignore[attr-defined]
    datamodel.event = event  # type: ignore[attr-defined]
    sys.modules.update(
        {"lib": lib, "lib.plugins": plugins, "lib.datamodel": datamodel, "lib.datamodel.event": event}
    )
