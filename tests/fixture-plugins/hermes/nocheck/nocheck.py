"""A Hermes-style plugin whose `seek` checks nothing (as Hermes's Kafka plugin's does), on an
in-memory bus, for buslink's tests: the host must check the first event read after a seek.

Settings: `events` (how many, default 20), `step` (the offsets go 0, step, 2*step, ...,
default 1), `ignore_seek` (a broken plugin: `seek` leaves the position at the beginning),
`offset_type` (`int` by default; `str` gives offsets "k000", "k002", ...; `bool`, `bigint`
and `nan` give offsets buslink must refuse).
"""

import time
from datetime import datetime

from lib.datamodel.event import Event
from lib.plugins import AbstractMessageBusConsumerPlugin

HERMES_PLUGIN_CLASSNAME = "NoCheckPlugin"


class NoCheckPlugin(AbstractMessageBusConsumerPlugin):
    """An in-memory bus whose seek accepts any offset (test plugin)."""

    def __init__(self, settings):
        super().__init__(settings)
        step = int(self._settings.get("step", 1))
        numbers = [n * step for n in range(int(self._settings.get("events", 20)))]
        kind = self._settings.get("offset_type", "int")
        self._offsets = [
            {
                "int": lambda n: n,
                "str": lambda n: f"k{n:03d}",
                "bool": lambda n: n % 2 == 1,
                "bigint": lambda n: n + (1 << 70),
                "nan": lambda n: float("nan"),
            }[kind](n)
            for n in numbers
        ]
        self._position = 0
        self._timeout = 1.0

    def open(self):
        pass

    def close(self):
        pass

    def setTimeout(self, timeout_ms):
        self._timeout = None if timeout_ms is None else timeout_ms / 1000

    def seekToBeginning(self):
        self._position = 0

    def seek(self, offset):
        # Accepts anything, as a consumer that only sets where the next read starts.
        if not self._settings.get("ignore_seek"):
            self._position = offset

    def _before(self, offset):
        """Whether `offset` comes before the position (strings compare as text)."""
        if isinstance(self._position, str) and isinstance(offset, str):
            # After a read the position is the offset read: only later ones are read again
            # from it, as a Kafka consumer's `seek(offset)` re-reads that offset.
            return offset < self._position
        if isinstance(self._position, int) and isinstance(offset, int):
            return offset < self._position
        return False

    def findNextEventOfCategory(self, category):
        for event in self:
            if event.evcategory == category:
                return event
        return None

    def __iter__(self):
        for index, offset in enumerate(self._offsets):
            if self._before(offset):
                continue
            event = Event.from_json(
                {"evcategory": "base", "eventtype": "added", "objtype": "T", "objpkey": index, "objattrs": {}}
            )
            event.offset = offset
            event.timestamp = datetime.fromtimestamp(1_795_345_271 + index)
            yield event
            self._position = offset + 1 if isinstance(offset, int) else offset
        if self._timeout is not None:
            time.sleep(self._timeout)
