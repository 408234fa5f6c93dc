"""The subprocess protocol, version 1 (docs/subprocess-protocol.md): frames, messages, batches,
and the serve loop that drives a `Consumer` subclass for the host.

Frames: a 4-byte big-endian length N, then N bytes: a 4-byte big-endian length J, J bytes of
UTF-8 JSON (the message), and the body section (the rest). Batches carry a table of 24-byte
event records and the events' bodies in the body section.
"""

import base64
import json
import math
import os
import struct
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Dict, List, Optional, Sequence, Tuple, Union

#: The protocol versions this package speaks: (min, max).
PROTOCOL = (1, 1)

#: The largest frame either side accepts, in bytes.
MAX_FRAME = 64 << 20

#: One event's record in a batch's body section: offset (or its index in `offsets`), time in
#: microseconds, body length, category index, flags, body kind.
RECORD = struct.Struct(">qqIHBB")

_OFFSET_LISTED = 1
_BODY_NONE, _BODY_JSON, _BODY_BYTES = 0, 1, 2
_INT64 = (-(1 << 63), (1 << 63) - 1)

#: An offset: where an event is on the bus.
Offset = Union[int, float, str, bytes]


class PluginError(Exception):
    """An error the host is told about; `kind` says what it does with it (transient kinds
    `connect`, `timeout` and `protocol` make it reconnect; the others stop the consumer)."""

    kind = "internal"

    def __init__(self, message: str, key: Optional[str] = None):
        super().__init__(message)
        self.message = message
        #: The setting it is about (config errors).
        self.key = key


class ConfigError(PluginError):
    """The settings are wrong: name the setting in `key`."""

    kind = "config"


class ConnectError(PluginError):
    """The bus cannot be reached (transient: the host retries with backoff)."""

    kind = "connect"


class TimeoutError_(PluginError):
    """The bus did not answer in time (transient)."""

    kind = "timeout"


class ProtocolError(PluginError):
    """The bus answered something unexpected (transient)."""

    kind = "protocol"


class OffsetNotFound(PluginError):
    """No event at the offset asked for."""

    kind = "offset_not_found"


class DataError(PluginError):
    """An event cannot be read (the consumer stops, naming it)."""

    kind = "data"


@dataclass(slots=True)
class Event:
    """One event: its offset, its time in microseconds since the Unix epoch, its category, and
    its body: `str` for JSON text exactly as the bus holds it, `bytes` for anything else."""

    offset: Offset
    time_us: int
    category: str
    body: Union[str, bytes]


@dataclass
class Gap:
    """Events gone from the bus before they were delivered, before the event at `before`."""

    before: int
    range: str
    count: Optional[int] = None


@dataclass
class Batch:
    """A poll's answer. `status`: `ready` (with events), `idle` (nothing within the timeout,
    more may come), `drained` (the bus said, just now, that nothing more is there) or `ended`
    (nothing will ever come)."""

    status: str
    events: List[Event] = field(default_factory=list)
    gaps: List[Gap] = field(default_factory=list)


class Consumer:
    """The consumer contract. Subclass it, set `NAME` (the config's `class`), `DESCRIPTION`
    and `SETTINGS_DOC`, and implement at least `open`, `close`, `seek_to_beginning`, `seek`,
    `set_timeout` and `poll`. The optional methods below are announced to the host only when
    a subclass defines them; otherwise the host does what the contract's default says."""

    NAME = ""
    DESCRIPTION = ""
    SETTINGS_DOC = ""

    def __init__(self, settings: Dict[str, Any], config_dir: str):
        """Check the settings (raise `ConfigError` naming the key), without connecting.
        Relative paths in them are relative to `config_dir`."""
        self.settings = dict(settings)
        self.config_dir = config_dir

    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def seek_to_beginning(self) -> None:
        raise NotImplementedError

    def seek(self, offset: Offset) -> None:
        """Position on the event at `offset`; `OffsetNotFound` when none is there."""
        raise NotImplementedError

    def set_timeout(self, timeout: Optional[float]) -> None:
        """How long a poll waits for a first event, in seconds (`None`: for ever)."""
        raise NotImplementedError

    #: How long the host waits for a poll's answer before it counts this process as frozen and
    #: kills it, in seconds: the timeout plus the host's grace, set with each `set_timeout`
    #: (`None`: no timeout, or a host that does not say). A poll must answer within it.
    poll_limit: Optional[float] = None

    def poll(self, max_events: int, max_bytes: int) -> Batch:
        """At most `max_events` events, about `max_bytes` of bodies at most, from the position
        on; when none is waiting, wait up to the timeout for a first one."""
        raise NotImplementedError

    # Optional (announced as capabilities when defined by a subclass):
    # seek_after(offset), seek_to_end(), set_stop_when_drained(stop),
    # find_next_event_of_category(category) -> Optional[Event], check_position(offset,
    # time_us), lag() -> Optional[int], counters() -> [(name, value)], query(command, args) ->
    # str, next_offset(offset) -> Optional[offset].


_OPTIONAL = [
    "seek_after",
    "seek_to_end",
    "set_stop_when_drained",
    "find_next_event_of_category",
    "check_position",
    "lag",
    "counters",
    "query",
    "next_offset",
]


def log(level: str, message: str) -> None:
    """A line in buslink's log at `level` (`Error`, `Warn`, `Info`, `Debug`)."""
    for line in str(message).splitlines() or [""]:
        sys.stderr.write(f"[{level}] {line}\n")
    sys.stderr.flush()


# --- offsets ---------------------------------------------------------------------------------


def check_offset(offset: Any) -> None:
    """A data error when buslink cannot keep `offset`: not an int, float, str or bytes, or a
    bool, a NaN or an int beyond 64 bits."""
    if isinstance(offset, bool) or offset is None:
        raise DataError(f"offset {offset!r} is not an offset")
    if isinstance(offset, int):
        if not _INT64[0] <= offset <= _INT64[1]:
            raise DataError(f"offset {offset} is beyond a signed 64-bit integer")
    elif isinstance(offset, float):
        if math.isnan(offset):
            raise DataError("offset NaN is not an offset")
    elif not isinstance(offset, (str, bytes, bytearray)):
        raise DataError(
            f"offset {offset!r} of type {type(offset).__name__}, not int, float, str or bytes"
        )


def offset_to_wire(offset: Offset) -> Dict[str, Any]:
    """`41` as `{"int": 41}`, and so on; what `check_offset` refuses is refused."""
    check_offset(offset)
    if isinstance(offset, int):
        return {"int": offset}
    if isinstance(offset, float):
        return {"float": offset}
    if isinstance(offset, str):
        return {"string": offset}
    return {"bytes": base64.b64encode(bytes(offset)).decode("ascii")}


def offset_from_wire(value: Dict[str, Any]) -> Offset:
    """The reverse of `offset_to_wire`."""
    if not isinstance(value, dict) or len(value) != 1:
        raise ProtocolError(f"an offset of the wrong shape: {value!r}")
    (kind, inner), = value.items()
    if kind == "int":
        return int(inner)
    if kind == "float":
        return float(inner)
    if kind == "string":
        return str(inner)
    if kind == "bytes":
        return base64.b64decode(inner)
    raise ProtocolError(f"an offset of unknown type {kind!r}")


# --- frames ----------------------------------------------------------------------------------


def _read_exactly(stream: BinaryIO, size: int) -> Optional[bytes]:
    chunks = []
    left = size
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            return None if left == size else b"".join(chunks)
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: BinaryIO) -> Optional[Tuple[Dict[str, Any], bytes]]:
    """The next frame's message and body section; `None` when the pipe closed between frames."""
    head = _read_exactly(stream, 4)
    if head is None:
        return None
    if len(head) < 4:
        raise ProtocolError("the pipe closed in the middle of a frame")
    (length,) = struct.unpack(">I", head)
    if length > MAX_FRAME or length < 4:
        raise ProtocolError(f"a frame of {length} bytes announced: not a frame ({head!r})")
    frame = _read_exactly(stream, length)
    if frame is None or len(frame) < length:
        raise ProtocolError("the pipe closed in the middle of a frame")
    (json_length,) = struct.unpack(">I", frame[:4])
    if 4 + json_length > length:
        raise ProtocolError("a frame whose JSON is longer than the frame")
    message = json.loads(frame[4 : 4 + json_length].decode("utf-8"))
    return message, frame[4 + json_length :]


def write_frame(stream: BinaryIO, message: Dict[str, Any], body: bytes = b"") -> None:
    """Writes `message` and the body section `body` as one frame, and flushes."""
    text = json.dumps(message, separators=(",", ":"), allow_nan=False).encode("utf-8")
    total = 4 + len(text) + len(body)
    if total > MAX_FRAME:
        raise DataError(f"a reply of {total} bytes does not fit a frame of {MAX_FRAME} bytes")
    stream.write(struct.pack(">II", total, len(text)))
    stream.write(text)
    if body:
        stream.write(body)
    stream.flush()


# --- batches ---------------------------------------------------------------------------------


def encode_batch(batch: Batch) -> Tuple[Dict[str, Any], bytes]:
    """A batch as a reply's JSON part and body section (records, then bodies)."""
    categories: List[str] = []
    index_of: Dict[str, int] = {}
    listed: List[Dict[str, Any]] = []
    records = []
    # The bodies in order: `str` while every one so far is ASCII (its length in characters is
    # its length in bytes, and the section is encoded once at the end), `bytes` after.
    bodies: List[Union[str, bytes]] = []
    as_text = True
    pack = RECORD.pack
    for event in batch.events:
        category = index_of.get(event.category)
        if category is None:
            category = index_of[event.category] = len(categories)
            categories.append(event.category)
        flags = 0
        offset = event.offset
        if type(offset) is int:
            if not _INT64[0] <= offset <= _INT64[1]:
                check_offset(offset)
            number = offset
        else:
            listed.append(offset_to_wire(offset))
            number = len(listed) - 1
            flags = _OFFSET_LISTED
        body = event.body
        if isinstance(body, str):
            kind = _BODY_JSON
            if not (as_text and body.isascii()):
                if as_text:
                    bodies = [text.encode("ascii") for text in bodies]  # type: ignore[union-attr]
                    as_text = False
                body = body.encode("utf-8")
        else:
            body = bytes(body)
            kind = _BODY_BYTES if body else _BODY_NONE
            if as_text:
                bodies = [text.encode("ascii") for text in bodies]  # type: ignore[union-attr]
                as_text = False
        records.append(pack(number, int(event.time_us), len(body), category, flags, kind))
        bodies.append(body)
    message: Dict[str, Any] = {"status": batch.status, "count": len(batch.events)}
    if categories:
        message["categories"] = categories
    if listed:
        message["offsets"] = listed
    if batch.gaps:
        message["gaps"] = [
            {"before": gap.before, "range": gap.range, "count": gap.count}
            if gap.count is not None
            else {"before": gap.before, "range": gap.range}
            for gap in batch.gaps
        ]
    section = "".join(bodies).encode("ascii") if as_text else b"".join(bodies)  # type: ignore[arg-type]
    return message, b"".join(records) + section


# --- the serve loop ------------------------------------------------------------------------


def _capabilities(cls: type) -> List[str]:
    return [name for name in _OPTIONAL if getattr(cls, name, None) is not getattr(Consumer, name, None)]


def _error(error: BaseException) -> Dict[str, Any]:
    if isinstance(error, PluginError):
        wire = {"kind": error.kind, "message": error.message}
        if error.key is not None:
            wire["key"] = error.key
        return wire
    # An exception the plugin did not mean: said with where it came from.
    frame = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
    where = f" (at {frame[0].filename}:{frame[0].lineno})" if frame else ""
    return {"kind": "internal", "message": f"{type(error).__name__}: {error}{where}"}


class _Session:
    """One process's state: the classes served and the one consumer built."""

    def __init__(self, classes: Sequence[type], plugin: str, version: str):
        self.classes = {cls.NAME: cls for cls in classes}
        self.plugin = plugin
        self.version = version
        self.consumer: Optional[Consumer] = None

    def hello(self, request: Dict[str, Any]) -> Dict[str, Any]:
        host = request.get("protocol") or {}
        low, high = max(PROTOCOL[0], int(host.get("min", 0))), min(PROTOCOL[1], int(host.get("max", 0)))
        if low > high:
            raise ProtocolError(
                f"this plugin speaks protocol {PROTOCOL[0]}..={PROTOCOL[1]}, the host "
                f"{host.get('min')}..={host.get('max')}: no version in common"
            )
        return {
            "protocol": {"min": PROTOCOL[0], "max": PROTOCOL[1]},
            "chosen": high,
            "plugin": {"name": self.plugin, "version": self.version},
            "classes": [
                {"name": cls.NAME, "description": cls.DESCRIPTION, "settings_doc": cls.SETTINGS_DOC}
                for cls in self.classes.values()
            ],
            # The union: the host asks for one class's, and only that class is built.
            "capabilities": sorted({c for cls in self.classes.values() for c in _capabilities(cls)}),
        }

    def new_consumer(self, request: Dict[str, Any]) -> None:
        name = request.get("class", "")
        cls = self.classes.get(name)
        if cls is None:
            raise ConfigError(
                f"no consumer class {name!r}; this plugin has: {', '.join(self.classes) or 'none'}",
                key="class",
            )
        settings = request.get("settings") or {}
        if not isinstance(settings, dict):
            raise ConfigError("the settings must be a table", key="settings")
        self.consumer = cls(settings, request.get("config_dir", "."))

    def call(self, op: str, request: Dict[str, Any]) -> Tuple[Any, bytes]:
        consumer = self.consumer
        if consumer is None:
            raise ProtocolError(f"{op} before new_consumer")
        if op == "open":
            consumer.open()
        elif op == "close":
            consumer.close()
        elif op == "seek_to_beginning":
            consumer.seek_to_beginning()
        elif op == "seek_to_end":
            consumer.seek_to_end()  # type: ignore[attr-defined]
        elif op == "seek":
            consumer.seek(offset_from_wire(request["offset"]))
        elif op == "seek_after":
            consumer.seek_after(offset_from_wire(request["offset"]))  # type: ignore[attr-defined]
        elif op == "set_timeout":
            millis = request.get("timeout_ms")
            limit = request.get("poll_limit_ms")
            try:
                consumer.poll_limit = None if limit is None else limit / 1000.0
            except AttributeError:
                pass  # a class with __slots__ of its own does not keep it
            consumer.set_timeout(None if millis is None else millis / 1000.0)
        elif op == "set_stop_when_drained":
            consumer.set_stop_when_drained(bool(request.get("stop")))  # type: ignore[attr-defined]
        elif op == "poll":
            batch = consumer.poll(int(request["max_events"]), int(request["max_bytes"]))
            if len(batch.events) > int(request["max_events"]):
                raise ProtocolError(
                    f"{len(batch.events)} events for a poll of at most {request['max_events']}"
                )
            return encode_batch(batch)
        elif op == "find_next_event_of_category":
            found = consumer.find_next_event_of_category(request["category"])  # type: ignore[attr-defined]
            return encode_batch(Batch("ready", [found]) if found is not None else Batch("idle"))
        elif op == "check_position":
            consumer.check_position(  # type: ignore[attr-defined]
                offset_from_wire(request["offset"]), int(request["timestamp_us"])
            )
        elif op == "lag":
            return consumer.lag(), b""  # type: ignore[attr-defined]
        elif op == "counters":
            return [[str(n), int(v)] for n, v in consumer.counters()], b""  # type: ignore[attr-defined]
        elif op == "query":
            return str(consumer.query(request["command"], list(request.get("args", [])))), b""  # type: ignore[attr-defined]
        elif op == "next_offset":
            following = consumer.next_offset(offset_from_wire(request["offset"]))  # type: ignore[attr-defined]
            return (None if following is None else offset_to_wire(following)), b""
        elif op == "bus_owns_position":
            return False, b""
        elif op in ("acknowledge", "serve"):
            pass
        else:
            raise ProtocolError(f"unknown operation {op!r}")
        return None, b""


def serve(classes: Sequence[type], plugin: str, version: str) -> int:
    """Serves `classes` (subclasses of `Consumer`) on standard input and output until the host
    says `bye` or closes the pipe. Standard output carries frames only: what the plugin prints
    goes to standard error (the host's log). Returns the exit status (0, or 2 when a frame
    could not be read or written); call it as `sys.exit(serve(...))`."""
    frames_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    frames_in = sys.stdin.buffer
    session = _Session(classes, plugin, version)
    while True:
        try:
            received = read_frame(frames_in)
        except PluginError as error:
            log("Error", f"{plugin}: {error.message}")
            return 2
        if received is None:
            return 0
        request, _ = received
        request_id = request.get("id", 0)
        op = request.get("op", "")
        body = b""
        try:
            if op == "hello":
                answer: Dict[str, Any] = {"ok": session.hello(request)}
            elif op == "new_consumer":
                session.new_consumer(request)
                answer = {"ok": None}
            elif op == "bye":
                answer = {"ok": None}
            else:
                value, body = session.call(op, request)
                answer = {"ok": value}
        except Exception as error:  # every failure is the host's to hear, never a dead child
            answer = {"error": _error(error)}
            body = b""
        try:
            write_frame(frames_out, {"id": request_id, **answer}, body)
        except DataError as error:
            write_frame(frames_out, {"id": request_id, "error": _error(error)})
        except OSError:
            return 2
        if op == "bye":
            return 0
