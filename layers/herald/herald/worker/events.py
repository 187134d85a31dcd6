"""The events a worker delivers, read once: events never change once published, so a worker keeps the
recent ones in memory across a fan-out's deliveries, and a batch's deliveries of one event share one read.

A batch keeps every event it read for as long as it runs (its deliveries hold them anyway). Between batches the
cache keeps at most ``EVENT_CACHE_BYTES`` of payloads (``trim``): events of up to 256 KiB, a thousand of them
kept for good, would take a quarter of the function's memory from every batch after."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from herald.storage import StoredEvent
    from herald.worker.runtime import Worker

#: Events kept: at least a batch's worth (100 messages of up to ten deliveries, each maybe of an event of its own:
#: a batch publish packs its events' deliveries together), so a batch's deliveries never read again what its
#: batch read found.
EVENT_CACHE_SIZE = 1024
#: The payload bytes (as held in memory) the cache keeps from one batch to the next, the most recently used events
#: first: a thousand events of 16 KiB, sixty-four of 256 KiB. The fan-out, which parses an event's data for its
#: filters, reads its event apart from this cache.
EVENT_CACHE_BYTES = 16 * 1024 * 1024


class EventCache:
    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._events: OrderedDict[str, StoredEvent] = OrderedDict()
        self._reads: dict[str, asyncio.Future[StoredEvent | None]] = {}
        self._lock = threading.Lock()

    async def get(self, event_id: str) -> StoredEvent | None:
        """The event, read once however many deliveries of a batch ask for it at the same time; None once it
        has expired (a cached event too: its retention is over, whatever the cache still holds)."""
        read = self._reads.get(event_id)
        if read is None:
            read = self._reads[event_id] = asyncio.ensure_future(self._worker.io(self._read, event_id))
            read.add_done_callback(lambda _: self._reads.pop(event_id, None))
        stored = await asyncio.shield(read)
        return stored if stored is not None and stored.expires_at > self._worker.clock() else None

    def holds(self, event_id: str) -> bool:
        """Whether the event is in memory already, and not expired (a batch need not read it)."""
        with self._lock:
            stored = self._events.get(event_id)
        return stored is not None and stored.expires_at > self._worker.clock()

    def trim(self) -> None:
        """Keep at most ``EVENT_CACHE_BYTES`` of payloads, the most recently used events: between batches."""
        with self._lock:
            newest_first = list(reversed(self._events))
            kept = 0
            for position, event_id in enumerate(newest_first):
                kept += sys.getsizeof(self._events[event_id].event.payload)  # 1, 2 or 4 bytes a character
                if kept > EVENT_CACHE_BYTES:
                    for older in newest_first[position:]:
                        del self._events[older]
                    return

    def keep(self, found: Iterable[StoredEvent]) -> None:
        """Hold events read elsewhere (the batch's read), as if this cache had read them."""
        for stored in found:
            self._remember(stored)

    def _remember(self, stored: StoredEvent) -> None:
        with self._lock:
            self._events[stored.event.id] = stored
            self._events.move_to_end(stored.event.id)
            while len(self._events) > EVENT_CACHE_SIZE:
                self._events.popitem(last=False)

    def _read(self, event_id: str) -> StoredEvent | None:
        with self._lock:
            stored = self._events.get(event_id)
            if stored is not None and stored.expires_at > self._worker.clock():
                self._events.move_to_end(event_id)
                return stored
            # Expired (its id may have been published again since): read afresh.
            self._events.pop(event_id, None)
        stored = self._worker.store.events.get(event_id)
        if stored is not None:
            self._remember(stored)
        return stored
