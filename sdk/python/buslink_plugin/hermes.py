"""Serves an unchanged Hermes messagebus consumer plugin (a directory
`plugins/messagebus_consumers/NAME/` holding `NAME.py`) over buslink's subprocess protocol.

    python3 -m buslink_plugin.hermes --plugin-dir DIR --serve-as NAME [--hermes-root ROOT]
                                     [--class CLASS]

buslink runs it for `plugin = { hermes_plugin = "DIR" }`. With `--hermes-root`, Hermes's own
`lib` is imported from ROOT; without it, the stand-ins of `hermes_standins` serve plugins that
use only what the consumer contract documents.

How Hermes's contract maps onto buslink's, faithful to what hermes-client does:

- `setTimeout` is called before `open` (Hermes's Kafka plugin reads it only there), with the
  consumer's `timeout_ms`.
- One iteration of the plugin is kept across polls, read by a thread into a bounded queue, so
  that a batch forms without a round trip per event and without restarting the plugin's
  iteration (a new `iter()` per poll would read the whole remainder again). A poll waits up to
  the timeout for a first event, then takes what is there. When the plugin's iteration ends (its
  own timeout), the next poll starts another from where it stopped, as hermes-client loops.
- Resuming: `seek(last + 1)` for integers, as hermes-client does; for other offsets
  `seek(last)` and the first event dropped when its offset is `last`.
- `findNextEventOfCategory`, then a step past the event it returned (Hermes's sqlite plugin
  leaves its position on that event; buslink's contract wants it after).
- An `IndexError` from `seek` is an offset that is not on the bus. A plugin whose `seek` cannot
  fail is checked against the first event read after it.
- Offsets of the four Python types become buslink offsets and back; a bool, a NaN or an int
  beyond 64 bits is refused naming the event. The body is the plugin's `Event.to_json()`; the
  time its `timestamp`, a naive datetime read in the child's time zone (TZ), sent as UTC.
- Hermes plugins cannot tell "drained" from "idle": with `--once` the run ends at the first
  idle poll, and buslink says it could not tell. Idle is the plugin's iteration ending (its own
  timeout) with no event, or no event until a second before the host's poll limit (the timeout
  plus the host's grace, which `set_timeout` carries): a plugin still reading its first rows is
  not idle.
"""

import argparse
import collections
import gc
import importlib.util
import os
import queue
import sys
import threading
import time
import traceback
from datetime import datetime, timezone
from typing import Any, List, Optional

from .protocol import (
    Batch,
    ConfigError,
    ConnectError,
    Consumer,
    DataError,
    Event,
    Gap,
    OffsetNotFound,
    PluginError,
    check_offset,
    log,
    serve,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

#: How many events the reading thread may hold ahead of the polls.
_AHEAD = 4096


# Under `--once`, how much sooner than the host's poll limit (`poll_limit`: the timeout plus
# the host's grace, sent with `set_timeout`) a poll gives up waiting for the plugin's first
# event or the end of its iteration: time to answer before the host counts the child as frozen.
ONCE_ANSWER_MARGIN_S = 1.0
# The same wait from a host that does not send its limit: the timeout plus this (its grace was
# 5 s, docs/subprocess-protocol.md).
ONCE_PATIENCE_S = 4.0


def _where(error: BaseException) -> str:
    """`Type: message (at file:line)`: the exception and its last frame."""
    frames = traceback.extract_tb(error.__traceback__) if error.__traceback__ else []
    at = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{at}"


def _check_offset(offset: Any, event: Any) -> Any:
    """The event's offset if buslink can keep it, else a data error naming the event."""
    try:
        check_offset(offset)
    except DataError as error:
        raise DataError(f"event {event!r}: {error.message}")
    return offset


#: The local zone's offset from UTC by (year, month, day, hour) of a naive local time: zones
#: change their offset on the hour, and a bus's events come hours at a time.
_OFFSETS: dict = {}
_NAIVE_EPOCH = datetime(1970, 1, 1)


def _time_us(timestamp: Any, event: Any) -> int:
    """A Hermes timestamp (a naive local datetime; an aware one as it says) as microseconds
    since the Unix epoch."""
    if not isinstance(timestamp, datetime):
        raise DataError(f"event {event!r}: timestamp {timestamp!r} is not a datetime")
    if timestamp.tzinfo is not None:
        delta = timestamp - _EPOCH
    else:
        hour = (timestamp.year, timestamp.month, timestamp.day, timestamp.hour)
        offset = _OFFSETS.get(hour)
        if offset is None:
            offset = timestamp.astimezone().utcoffset()
            if len(_OFFSETS) > 10_000:
                _OFFSETS.clear()
            _OFFSETS[hour] = offset
        delta = timestamp - _NAIVE_EPOCH - offset
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _to_event(hermes_event: Any) -> Event:
    offset = _check_offset(getattr(hermes_event, "offset", None), hermes_event)
    return Event(
        offset=offset,
        time_us=_time_us(getattr(hermes_event, "timestamp", None), hermes_event),
        category=str(getattr(hermes_event, "evcategory", "") or ""),
        body=hermes_event.to_json(),
    )


class _Worker:
    """The one thread that touches the plugin. Hermes plugins may hold objects bound to the
    thread that made them (an `sqlite3` connection refuses every other thread), so the
    constructor, every call and the iteration all run here. While iterating, it puts events
    into a bounded queue: ("event", Event), ("end", None) when the plugin's iteration ended (its
    timeout), ("error", exception); between two events it runs the calls asked of it."""

    def __init__(self):
        self.commands: "queue.Queue" = queue.Queue()
        # Events read and not taken: a deque (appends and pops need no lock), with an event
        # flag the taker waits on only when it is empty.
        self.events: "collections.deque" = collections.deque()
        self.arrived = threading.Event()
        # Set while the taker waits for an event: only then is `arrived` signalled.
        self.waiting = False
        self.iterator: Any = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def call(self, function, *args):
        """Runs `function(*args)` on the worker's thread: its result, or its exception raised
        here. While the plugin is inside a read this waits for the read (at most the plugin's
        own timeout when the bus is idle)."""
        reply: "queue.Queue" = queue.Queue(maxsize=1)
        self.commands.put((function, args, reply))
        ok, value = reply.get()
        if ok:
            return value
        raise value

    def start(self, plugin: Any) -> None:
        """Starts iterating `plugin` (no-op when iterating already)."""
        self.call(self._start, plugin)

    def stop(self) -> None:
        """Stops iterating (the generator is dropped, as hermes-client drops it) and forgets
        the events read and not taken."""
        self.call(self._stop)

    def _start(self, plugin: Any) -> None:
        if self.iterator is None:
            self.iterator = iter(plugin)

    def _stop(self) -> None:
        iterator, self.iterator = self.iterator, None
        close = getattr(iterator, "close", None)
        if close is not None:
            try:
                close()
            except Exception as error:
                log("Warn", f"dropping the plugin's iteration: {_where(error)}")
        self.events.clear()

    def _run(self) -> None:
        while True:
            waiting = self.iterator is None or len(self.events) >= _AHEAD
            function = None
            # While reading, a call asked for is looked for between two events (`empty` is
            # cheaper than a `get` that raises).
            if waiting or not self.commands.empty():
                try:
                    function, args, reply = self.commands.get(
                        block=waiting, timeout=0.002 if self.iterator else None
                    )
                except queue.Empty:
                    pass
            if function is not None:
                try:
                    reply.put((True, function(*args)))
                except BaseException as error:  # handed back to the caller
                    reply.put((False, error))
                continue
            if self.iterator is None or len(self.events) >= _AHEAD:
                continue
            try:
                item = ("event", _to_event(next(self.iterator)))
            except StopIteration:
                item, self.iterator = ("end", None), None
            except Exception as error:  # the plugin's failure, handed to the next poll
                item, self.iterator = ("error", error), None
            self.events.append(item)
            if self.waiting:
                self.arrived.set()

    def take(self, wait: Optional[float]) -> Any:
        """The next item read, waiting up to `wait` seconds (`None`: for ever) for one;
        `None` when none came."""
        while True:
            try:
                return self.events.popleft()
            except IndexError:
                pass
            self.waiting = True
            self.arrived.clear()
            try:
                if self.events:
                    continue
                if not self.arrived.wait(wait):
                    try:
                        return self.events.popleft()
                    except IndexError:
                        return None
            finally:
                self.waiting = False

    def take_now(self) -> Any:
        """The next item read if one is there, else, after a millisecond to let the plugin
        read on (the idle cut), the next one or `None`. The taker never wakes per event."""
        try:
            return self.events.popleft()
        except IndexError:
            pass
        time.sleep(0.001)
        try:
            return self.events.popleft()
        except IndexError:
            return None


def _requirements(plugin_dir: str) -> List[str]:
    """The lines of the plugin's `requirements.txt` that name a package."""
    try:
        with open(os.path.join(plugin_dir, "requirements.txt"), encoding="utf-8") as file:
            lines = [line.split("#", 1)[0].strip() for line in file]
    except OSError:
        return []
    return [line for line in lines if line]


def _missing_module(error: ImportError, plugin_dir: str) -> str:
    """What an import error means for an operator: the module missing, the requirement that
    provides it when `requirements.txt` names one, and the interpreter to install it for."""
    module = (getattr(error, "name", None) or "").split(".")[0]
    if not module:
        return _where(error)
    wanted = _requirements(plugin_dir)
    simple = module.lower().replace("_", "-")
    listed = [
        line
        for line in wanted
        if line.lower().replace("_", "-").split("=")[0].split("<")[0].split(">")[0].strip()
        in (simple, f"python-{simple}", f"py{simple}")
    ]
    if module == "lib":
        advice = "it imports Hermes's own lib: set hermes_root to Hermes's source tree"
    elif listed:
        advice = f"its requirements.txt lists {listed[0]!r}: install it for {sys.executable}"
    elif wanted:
        advice = f"its requirements.txt lists {', '.join(wanted)}: install them for {sys.executable}"
    else:
        advice = f"install it for {sys.executable}"
    return f"needs the module {module!r}, which {sys.executable} cannot import; {advice} ({_where(error)})"


def _load_plugin_class(plugin_dir: str, class_name: Optional[str]) -> type:
    name = os.path.basename(os.path.normpath(plugin_dir))
    path = os.path.join(plugin_dir, f"{name}.py")
    if not os.path.isfile(path):
        raise ConfigError(f"Hermes plugin directory {plugin_dir}: no {name}.py in it", key="plugin")
    spec = importlib.util.spec_from_file_location(f"hermes_plugin_{name}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot be imported", key="plugin")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as error:
        raise ConfigError(f"{path}: {_missing_module(error, plugin_dir)}", key="plugin")
    except Exception as error:
        raise ConfigError(f"{path}: {_where(error)}", key="plugin")
    wanted_class = class_name or getattr(module, "HERMES_PLUGIN_CLASSNAME", None)
    if not wanted_class:
        raise ConfigError(f"{path}: no HERMES_PLUGIN_CLASSNAME, and no class named", key="plugin")
    cls = getattr(module, wanted_class, None)
    if not isinstance(cls, type):
        raise ConfigError(f"{path}: no class {wanted_class!r}", key="plugin")
    return cls


def _settings_doc(plugin_cls: type, plugin_dir: str) -> str:
    """The class's docstring, and the plugin's settings schema (Cerberus rules) as written."""
    doc = (plugin_cls.__doc__ or "").strip() or "The plugin's settings dict."
    name = os.path.basename(os.path.normpath(plugin_dir))
    path = os.path.join(plugin_dir, f"config-schema-plugin-{name}.yml")
    try:
        with open(path, encoding="utf-8") as file:
            rules = "\n".join(
                line.rstrip() for line in file if line.strip() and not line.lstrip().startswith("#")
            )
    except OSError:
        return doc
    return f"{doc}\n\nThe plugin's schema ({os.path.basename(path)}, Cerberus rules):\n\n{rules}"


def make_consumer_class(plugin_cls: type, plugin_dir: str, serve_as: str) -> type:
    """A buslink `Consumer` class named `serve_as` that drives `plugin_cls`, a Hermes consumer
    plugin class."""

    class HermesConsumer(Consumer):
        NAME = serve_as
        DESCRIPTION = f"Hermes messagebus consumer plugin {plugin_cls.__name__} ({plugin_dir})"
        SETTINGS_DOC = _settings_doc(plugin_cls, plugin_dir)

        def __init__(self, settings, config_dir):
            super().__init__(settings, config_dir)
            _validate_schema(plugin_dir, settings)
            self.worker = _Worker()
            try:
                self.plugin = self.worker.call(plugin_cls, dict(settings))
            except Exception as error:
                raise ConfigError(f"{plugin_cls.__name__}(settings): {_where(error)}")
            self.timeout: Optional[float] = None
            self.stop_when_drained = False
            self.iterating = False
            # After a seek the first event read is checked against it; for non-integer
            # resumes the event at `skip` is dropped.
            self.expect: Any = None
            self.skip: Any = None
            # The last event handed over, and how the plugin was last positioned.
            self.last: Any = None
            self.origin = None

        # -- the session ------------------------------------------------------------------

        def _call(self, what: str, method, *args):
            """The plugin's `method(*args)` on the worker: other failures than buslink's own
            are connect errors (retried), named with the exception and its line."""
            try:
                return self.worker.call(method, *args)
            except PluginError:
                raise
            except Exception as error:
                raise ConnectError(f"{what}: {_where(error)}")

        def set_timeout(self, timeout):
            self.timeout = timeout
            millis = None if timeout is None else int(round(timeout * 1000))
            self._call("setTimeout", self.plugin.setTimeout, millis)

        def set_stop_when_drained(self, stop):
            self.stop_when_drained = stop

        def open(self):
            self._call("open", self.plugin.open)

        def close(self):
            self._halt()
            try:
                self.worker.call(self.plugin.close)
            except Exception as error:
                log("Warn", f"close: {_where(error)}")

        def _halt(self, reposition=False):
            """Stops the iteration; with `reposition`, puts the plugin back right after the
            last event handed over (the iteration may have read further)."""
            if not self.iterating:
                return
            self.worker.stop()
            self.iterating = False
            if reposition:
                if self.last is not None:
                    self.seek_after(self.last)
                elif self.origin is not None:
                    self.origin()

        def seek_to_beginning(self):
            self._halt()
            self._call("seekToBeginning", self.plugin.seekToBeginning)
            self.expect = self.skip = self.last = None
            self.origin = self.seek_to_beginning

        def seek(self, offset):
            self._halt()
            try:
                self.worker.call(self.plugin.seek, offset)
            except IndexError as error:
                raise OffsetNotFound(f"no event at offset {offset!r}: {error}")
            except Exception as error:
                raise ConnectError(f"seek({offset!r}): {_where(error)}")
            self.expect, self.skip, self.last = offset, None, None
            self.origin = lambda: self.seek(offset)

        def seek_after(self, offset):
            if isinstance(offset, int):
                self.seek(offset + 1)
                # The event after `offset` may be further on (a gap): not checked.
                self.expect = None
                self.last = offset
            else:
                self.seek(offset)
                self.expect, self.skip, self.last = None, offset, offset

        def find_next_event_of_category(self, category):
            self._halt(reposition=True)
            found = self._call(
                "findNextEventOfCategory", self.plugin.findNextEventOfCategory, category
            )
            if found is None:
                return None
            event = _to_event(found)
            # Hermes's plugins may leave their position on the event found: step past it.
            self.seek_after(event.offset)
            return event

        def poll(self, max_events, max_bytes):
            if not self.iterating:
                try:
                    self.worker.start(self.plugin)
                except Exception as error:
                    raise ConnectError(f"__iter__: {_where(error)}")
                self.iterating = True
            batch = Batch("ready")
            size = 0
            first = True
            while len(batch.events) < max_events and size < max_bytes:
                if first:
                    wait = self.timeout
                    if self.stop_when_drained and wait is not None:
                        # `--once` ends at the first idle poll. A Hermes plugin says the bus is
                        # idle by ending its iteration (its own timeout); silence while it is
                        # still reading (a first query over a large backlog) is not that: wait
                        # for an event or the iteration's end, within the host's limit.
                        if self.poll_limit is not None:
                            wait = max(wait, self.poll_limit - ONCE_ANSWER_MARGIN_S)
                        else:
                            wait += ONCE_PATIENCE_S
                    taken = self.worker.take(None if wait is None else max(wait, 0.0))
                else:
                    taken = self.worker.take_now()
                if taken is None:
                    break
                kind, item = taken
                if kind == "end":
                    # The plugin's iteration ended (its timeout): the next poll starts another.
                    self.iterating = False
                    break
                if kind == "error":
                    self.iterating = False
                    if batch.events:
                        log("Warn", f"the plugin's iteration failed after a batch: {_where(item)}")
                        break
                    if isinstance(item, PluginError):
                        raise item
                    raise ConnectError(f"iterating: {_where(item)}")
                event = item
                if self.skip is not None:
                    drop = event.offset == self.skip
                    self.skip = None
                    if drop:
                        continue
                if self.expect is not None:
                    expected, self.expect = self.expect, None
                    if event.offset != expected:
                        if isinstance(expected, int) and isinstance(event.offset, int) and event.offset > expected:
                            batch.gaps.append(
                                Gap(len(batch.events), f"offsets {expected} to {event.offset - 1}", event.offset - expected)
                            )
                        else:
                            self._halt()
                            raise OffsetNotFound(
                                f"after seek({expected!r}) the plugin read offset {event.offset!r} first: "
                                f"{expected!r} is not on the bus"
                            )
                batch.events.append(event)
                size += len(event.body)
                self.last = event.offset
                # After the first event, what is there, until the plugin pauses (an idle cut).
                first = False
            if not batch.events:
                batch.status = "idle"
            return batch

    return HermesConsumer


def _validate_schema(plugin_dir: str, settings: dict) -> None:
    """The plugin's `config-schema-plugin-NAME.yml` (Cerberus rules), when Cerberus and PyYAML
    are importable: errors name the key. Without them the plugin's own checks are all, and a
    warning says so."""
    name = os.path.basename(os.path.normpath(plugin_dir))
    path = os.path.join(plugin_dir, f"config-schema-plugin-{name}.yml")
    if not os.path.isfile(path):
        return
    try:
        import cerberus  # type: ignore
        import yaml  # type: ignore
    except ImportError as error:
        log(
            "Warn",
            f"the settings are not checked against the plugin's {os.path.basename(path)}: "
            f"{sys.executable} cannot import {getattr(error, 'name', None) or error} "
            "(Cerberus and PyYAML are needed for that)",
        )
        return
    with open(path, encoding="utf-8") as file:
        schema = yaml.safe_load(file) or {}
    validator = cerberus.Validator(schema)
    if not validator.validate(settings):
        key, problems = sorted(validator.errors.items())[0]
        raise ConfigError(f"{key}: {problems} (the plugin's {os.path.basename(path)})", key=str(key))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="buslink_plugin.hermes")
    parser.add_argument("--plugin-dir", required=True)
    parser.add_argument("--serve-as", required=True, help="the class name buslink's config uses")
    parser.add_argument("--hermes-root")
    parser.add_argument("--class", dest="class_name")
    args = parser.parse_args(argv)
    from . import hermes_standins

    if args.hermes_root:
        sys.path.insert(0, args.hermes_root)
        hermes_standins.install_hermes_builtin()
    else:
        hermes_standins.install_standins()
    plugin_dir = os.path.abspath(args.plugin_dir)
    name = os.path.basename(os.path.normpath(plugin_dir))
    try:
        plugin_cls = _load_plugin_class(plugin_dir, args.class_name)
        classes = [make_consumer_class(plugin_cls, plugin_dir, args.serve_as)]
    except PluginError as error:
        # The handshake still happens; building the consumer says what is wrong.
        failure = error

        class Unloadable(Consumer):
            NAME = args.serve_as

            def __init__(self, settings, config_dir):
                raise failure

        classes = [Unloadable]
    # What is loaded by now (the interpreter's, Hermes's and the plugin's modules) lives as long
    # as the process: frozen out of the collector's sight, its full collections do not walk it
    # again and again while events stream (about 6% of the child's time on the bench's bus).
    gc.freeze()
    return serve(classes, plugin=f"hermes-{name}", version="hermes")


if __name__ == "__main__":
    sys.exit(main())
