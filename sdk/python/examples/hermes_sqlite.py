#!/usr/bin/env python3
"""A buslink consumer plugin in Python: the Hermes sqlite bus (the `hermesmessages` table).

The same bus as buslink's Rust sqlite plugin, read with Python's `sqlite3`, served over the
subprocess protocol by `buslink_plugin.serve`. Offsets are msgids; an event's category is its
JSON's `evcategory`; its body is the row's `data` as it is; its time the row's `timestamp`.

    [consumer]
    plugin = { command = ["python3", "/path/to/sdk/python/examples/hermes_sqlite.py"] }
    class = "PythonSqliteConsumer"
    [consumer.settings]
    uri = "bus.sqlite"
"""

import json
import os
import sqlite3
import sys
import time

# The package beside this example (an installed `buslink_plugin` works the same).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from buslink_plugin import (  # noqa: E402
    Batch,
    ConfigError,
    ConnectError,
    Consumer,
    Event,
    Gap,
    OffsetNotFound,
    serve,
)


class PythonSqliteConsumer(Consumer):
    NAME = "PythonSqliteConsumer"
    DESCRIPTION = "Hermes sqlite bus (the hermesmessages table), in Python"
    SETTINGS_DOC = (
        "- `uri` (string, required): the bus database file, relative to the config\n"
        "- `poll_interval_ms` (integer, default 100): how often an idle poll looks again"
    )

    def __init__(self, settings, config_dir):
        super().__init__(settings, config_dir)
        for key in settings:
            if key not in ("uri", "poll_interval_ms"):
                raise ConfigError(f"unknown setting {key!r}: expected uri or poll_interval_ms", key=key)
        uri = settings.get("uri")
        if not isinstance(uri, str) or not uri:
            raise ConfigError("`uri` must name the bus file", key="uri")
        interval = settings.get("poll_interval_ms", 100)
        if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
            raise ConfigError("`poll_interval_ms` must be a whole number of ms, at least 1", key="poll_interval_ms")
        self.path = os.path.join(config_dir, uri)
        self.interval = interval / 1000.0
        self.timeout = None
        self.db = None
        # The msgid the next poll reads from; the last msgid read (for gaps).
        self.position = 0
        self.last_read = None
        self.stop_when_drained = False

    def open(self):
        if not os.path.exists(self.path):
            raise ConnectError(f"bus file {self.path} does not exist yet")
        try:
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            self.db.execute("SELECT 1 FROM hermesmessages LIMIT 1").fetchall()
        except sqlite3.Error as error:
            self.db = None
            raise ConnectError(f"bus file {self.path}: {error}")

    def close(self):
        if self.db is not None:
            self.db.close()
            self.db = None

    def set_timeout(self, timeout):
        self.timeout = timeout

    def set_stop_when_drained(self, stop):
        self.stop_when_drained = stop

    def _one(self, sql, *args):
        try:
            return self.db.execute(sql, args).fetchone()
        except sqlite3.Error as error:
            raise ConnectError(f"bus file {self.path}: {error}")

    def seek_to_beginning(self):
        (first,) = self._one("SELECT MIN(msgid) FROM hermesmessages")
        self.position = first if first is not None else 0
        self.last_read = None

    def seek(self, offset):
        if not isinstance(offset, int):
            raise OffsetNotFound(f"offset {offset!r}: this bus's offsets are msgids (integers)")
        (first, last) = self._one("SELECT MIN(msgid), MAX(msgid) FROM hermesmessages")
        allocated = self._one("SELECT seq FROM sqlite_sequence WHERE name = 'hermesmessages'")
        newest = allocated[0] if allocated else (last or 0)
        # Valid from the oldest row present (older ones were purged) to the next msgid.
        if offset > newest + 1 or (first is None and offset != newest + 1):
            raise OffsetNotFound(f"no event at msgid {offset} (the bus ends at {newest})")
        self.position = offset
        self.last_read = offset - 1 if first is not None and offset > first else None

    def seek_after(self, offset):
        self.seek(offset + 1 if isinstance(offset, int) else offset)
        self.last_read = offset

    def lag(self):
        (waiting,) = self._one("SELECT COUNT(*) FROM hermesmessages WHERE msgid >= ?", self.position)
        return waiting

    def poll(self, max_events, max_bytes):
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            try:
                rows = self.db.execute(
                    "SELECT msgid, data, timestamp FROM hermesmessages WHERE msgid >= ? "
                    "ORDER BY msgid LIMIT ?",
                    (self.position, max_events),
                ).fetchall()
            except sqlite3.Error as error:
                raise ConnectError(f"bus file {self.path}: {error}")
            if rows:
                break
            if self.stop_when_drained:
                return Batch("drained")
            if deadline is not None and time.monotonic() >= deadline:
                return Batch("idle")
            pause = self.interval if deadline is None else min(self.interval, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
        batch = Batch("ready")
        size = 0
        for msgid, data, timestamp in rows:
            if batch.events and size + len(data) > max_bytes:
                break
            expected = None if self.last_read is None else self.last_read + 1
            if expected is not None and msgid > expected:
                batch.gaps.append(
                    Gap(len(batch.events), f"msgids {expected} to {msgid - 1}", msgid - expected)
                )
            try:
                category = json.loads(data).get("evcategory", "")
            except ValueError:
                category = ""
            batch.events.append(Event(msgid, round(timestamp * 1_000_000), category, data))
            size += len(data)
            self.last_read = msgid
            self.position = msgid + 1
        return batch


if __name__ == "__main__":
    sys.exit(serve([PythonSqliteConsumer], plugin="python-sqlite", version="0.1.0"))
