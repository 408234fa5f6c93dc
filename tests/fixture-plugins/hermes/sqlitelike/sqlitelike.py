"""A Hermes-style messagebus consumer plugin for buslink's tests, written for this repository
(not Hermes's code). It reads the Hermes sqlite bus the way Hermes's own sqlite plugin is
documented to behave, so that buslink's Hermes host meets each behaviour:

- the timeout given to `setTimeout` is only taken at `open` (as Hermes's Kafka plugin does);
- iteration `fetchall()`s every row after the position, yields them, and moves the position
  only when the next one is asked for (a generator dropped at a `yield` leaves the position
  on the event it yielded);
- when no row is there it sleeps 0.5 s and looks again, until the timeout (restarted after
  each read that found rows);
- `findNextEventOfCategory` iterates and returns the first match, dropping the generator;
- `seek` raises `IndexError` for an offset outside [oldest msgid, next msgid];
- timestamps are naive local datetimes (`datetime.fromtimestamp`);
- it logs through the builtin `__hermes__.logger` and prints to standard output.

Settings: `uri` (the bus file), `fail_in` (a method name: that method raises RuntimeError, for
the tests of errors), `first_read_delay_ms` (each iteration waits that long before its first
query, as a query over a large backlog does).
"""

import sqlite3
import time
from datetime import datetime

from lib.datamodel.event import Event
from lib.plugins import AbstractMessageBusConsumerPlugin

HERMES_PLUGIN_CLASSNAME = "SqliteLikeConsumerPlugin"


class SqliteLikeConsumerPlugin(AbstractMessageBusConsumerPlugin):
    """Reads a Hermes sqlite bus (test plugin). Settings: `uri`, `fail_in`."""

    def __init__(self, settings):
        super().__init__(settings)
        if self._settings.get("fail_in") == "__init__":
            raise RuntimeError("asked to fail in __init__")
        self._db = None
        self._position = None
        self._asked_timeout = 1000
        self._timeout = None

    def _maybe_fail(self, method):
        if self._settings.get("fail_in") == method:
            raise RuntimeError(f"asked to fail in {method}")

    def open(self):
        self._maybe_fail("open")
        print("sqlitelike: opening the bus")  # stdout: must never reach buslink's frames
        __hermes__.logger.info(f"sqlitelike: local time zone {time.strftime('%Z')}")
        # The timeout is read here, not when it is set.
        self._timeout = None if self._asked_timeout is None else self._asked_timeout / 1000
        try:
            self._db = sqlite3.connect(f"file:{self._settings['uri']}?mode=ro", uri=True)
        except sqlite3.OperationalError:
            __hermes__.logger.info(f"bus file {self._settings['uri']} is not there yet")
            self._db = None

    def close(self):
        self._maybe_fail("close")
        if self._db is not None:
            self._db.close()
            self._db = None

    def setTimeout(self, timeout_ms):
        self._asked_timeout = timeout_ms

    def seekToBeginning(self):
        self._maybe_fail("seekToBeginning")
        if self._db is None:
            self._position = -1
            return
        (first,) = self._db.execute("SELECT MIN(msgid) FROM hermesmessages").fetchone()
        self._position = -1 if first is None else first

    def seek(self, offset):
        self._maybe_fail("seek")
        if self._db is None:
            raise IndexError(f"offset {offset} is not on the bus (no bus yet)")
        row = self._db.execute(
            "SELECT MIN(msgid), (SELECT seq FROM sqlite_sequence WHERE name = 'hermesmessages') "
            "FROM hermesmessages"
        ).fetchone()
        first, last = row
        if last is None:
            raise IndexError(f"offset {offset} is not on the bus (an empty bus)")
        if first is None:
            first = last + 1
        if not first <= offset <= last + 1:
            raise IndexError(f"offset {offset} is not on the bus ({first} to {last + 1})")
        self._position = offset

    def findNextEventOfCategory(self, category):
        self._maybe_fail("findNextEventOfCategory")
        for event in self:
            if event.evcategory == category:
                return event
        return None

    def __iter__(self):
        self._maybe_fail("__iter__")
        # A first read that takes a while (a query over a large backlog), for the tests.
        time.sleep(float(self._settings.get("first_read_delay_ms", 0)) / 1000.0)
        give_up = None if self._timeout is None else time.monotonic() + self._timeout
        while give_up is None or time.monotonic() < give_up:
            if self._db is None:
                self.open()
                if self._db is None:
                    time.sleep(0.5)
                    continue
            rows = self._db.execute(
                "SELECT msgid, data, timestamp FROM hermesmessages WHERE msgid >= ? ORDER BY msgid",
                (self._position,),
            ).fetchall()
            if not rows:
                time.sleep(0.5)
                continue
            for msgid, data, timestamp in rows:
                event = Event.from_json(data)
                event.offset = msgid
                event.timestamp = datetime.fromtimestamp(timestamp)
                yield event
                # Reached only when the next event is asked for.
                self._position = msgid + 1
            if self._timeout is not None:
                give_up = time.monotonic() + self._timeout
