"""Durable work distribution on dramatiq.

The programming model is dramatiq's (actors, middleware, ``dramatiq.Worker``); this
package adds the embedded broker (:class:`SQLiteBroker`, one SQLite file, nothing to
start) and the operator protocol every broker adapter implements (:class:`QueueAdmin`).
"""

from kenning.queue.protocol import DeadLetter, QueueAdmin, QueueDepth
from kenning.queue.sqlite_broker import SQLiteBroker

__all__ = ["DeadLetter", "QueueAdmin", "QueueDepth", "SQLiteBroker"]
