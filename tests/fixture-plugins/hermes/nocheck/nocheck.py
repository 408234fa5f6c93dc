"""A Hermes-style plugin whose `seek` checks nothing (as Hermes's Kafka plugin's does), on an
in-memory bus, for buslink's tests: the host must check the first event read after a seek.

Settings: `events` (how many, default 20), `step` (the offsets go 0, step, 2*step, ...,
default 1), `ignore_seek` (a broken plugin: `seek` leaves the position at the beginning).
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
        self._offsets = [n * step for n in range(int(self._settings.get("events", 20)))]
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

    def findNextEventOfCategory(self, category):
        for event in self:
            if event.evcategory == category:
                return event
        return None

    def __iter__(self):
        for offset in self._offsets:
            if offset < self._position:
                continue
            event = Event.from_json(
                {"evcategory": "base", "eventtype": "added", "objtype": "T", "objpkey": offset, "objattrs": {}}
            )
            event.offset = offset
            event.timestamp = datetime.fromtimestamp(1_795_345_271 + offset)
            yield event
            self._position = offset + 1
        if self._timeout is not None:
            time.sleep(self._timeout)
