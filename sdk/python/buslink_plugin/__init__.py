"""buslink's subprocess plugin protocol for Python authors.

Write a class with the consumer contract's methods (subclass `Consumer`), and serve it::

    from buslink_plugin import Batch, Consumer, Event, serve

    class MyConsumer(Consumer):
        NAME = "MyConsumer"
        ...

    if __name__ == "__main__":
        serve([MyConsumer], plugin="my-bus", version="1.0.0")

Then name the program in buslink's config:
``plugin = { command = ["python3", "/opt/my-bus/my_bus.py"] }`` with ``class = "MyConsumer"``.
The protocol itself is docs/subprocess-protocol.md in buslink's repository; this package is
written from it alone, with Python's standard library only.
"""

from .protocol import (
    PROTOCOL,
    Batch,
    ConfigError,
    ConnectError,
    Consumer,
    DataError,
    Event,
    Gap,
    OffsetNotFound,
    PluginError,
    ProtocolError,
    TimeoutError_,
    log,
    serve,
)

__all__ = [
    "PROTOCOL",
    "Batch",
    "ConfigError",
    "ConnectError",
    "Consumer",
    "DataError",
    "Event",
    "Gap",
    "OffsetNotFound",
    "PluginError",
    "ProtocolError",
    "TimeoutError_",
    "log",
    "serve",
]
