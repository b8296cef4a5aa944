"""The engine's thread: it steps the batching engine while there is work and hands each
sequence's updates to the event loop of the HTTP request waiting for them."""

from __future__ import annotations

import asyncio
import threading
import time
import traceback
from dataclasses import dataclass, field

from mygpt.inference.engine import Engine, Request, Sequence, Update
from mygpt.serving.metrics import Metrics


class QueueFull(Exception):
    """More sequences wait for a slot than the server's --max-queue allows."""


@dataclass(eq=False)
class Ticket:
    """One sequence of an HTTP request: `index` is its choice; updates arrive on `queue`."""

    index: int
    queue: asyncio.Queue
    loop: asyncio.AbstractEventLoop
    sequence: Sequence | None = None
    arrived: float = field(default_factory=time.perf_counter)
    last_token: float | None = None


class EngineWorker:
    """Runs `engine` in a thread of its own; `submit` and `cancel` are for the event loop."""

    def __init__(self, engine: Engine, max_queue: int, metrics: Metrics):
        self.engine, self.max_queue, self.metrics = engine, max_queue, metrics
        self._work = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="mygpt-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish the sequences in flight, then end the thread."""
        with self._work:
            self._stopping = True
            self._work.notify()
        self._thread.join()

    def submit(self, requests: list[Request], queue: asyncio.Queue) -> list[Ticket]:
        """Queue `requests` (the choices of one HTTP request), all or none; QueueFull if the
        queue has no room for them."""
        loop = asyncio.get_running_loop()
        if len(self.engine.waiting) + len(requests) > self.max_queue + self._free_slots():
            raise QueueFull
        tickets = []
        for index, request in enumerate(requests):
            ticket = Ticket(index, queue, loop)
            # The engine's queue is a deque, which threads may append to while it steps.
            ticket.sequence = self.engine.add(request, tag=ticket)
            tickets.append(ticket)
        self.metrics.waiting.set(len(self.engine.waiting))
        with self._work:
            self._work.notify()
        return tickets

    def cancel(self, tickets: list[Ticket]) -> None:
        """Stop these sequences (their client left): each frees its slot at the next step."""
        for ticket in tickets:
            if ticket.sequence is not None:
                self.engine.cancel(ticket.sequence)

    def _free_slots(self) -> int:
        return max(0, self.engine.max_batch - len(self.engine.running))

    def _run(self) -> None:
        while True:
            with self._work:
                while not self.engine.busy and not self._stopping:
                    self._work.wait()
                if not self.engine.busy:
                    return
            # Not under the lock: the event loop must never wait for a step to add a request.
            try:
                updates = self.engine.step()
            except Exception:  # a bug: said in the log, and to each request, which fails
                traceback.print_exc()
                self._fail_all()
                continue
            self._publish(updates)

    def _fail_all(self) -> None:
        for sequence in [*self.engine.running, *self.engine.waiting]:
            self.engine.cancel(sequence)
            ticket: Ticket = sequence.tag
            ticket.loop.call_soon_threadsafe(_deliver, [(ticket, None)])
        self.engine.running.clear()
        self.engine.waiting.clear()

    def _publish(self, updates: list[Update]) -> None:
        now = time.perf_counter()
        m = self.metrics
        m.running.set(len(self.engine.running))
        m.waiting.set(len(self.engine.waiting))
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Ticket, Update]]] = {}
        for update in updates:
            ticket: Ticket = update.sequence.tag
            if update.token is not None:
                m.generation_tokens.inc()
                if ticket.last_token is None:
                    m.time_to_first_token.observe(now - ticket.arrived)
                else:
                    m.inter_token_latency.observe(now - ticket.last_token)
                ticket.last_token = now
            by_loop.setdefault(ticket.loop, []).append((ticket, update))
        for loop, items in by_loop.items():  # one wake-up of the event loop a step
            loop.call_soon_threadsafe(_deliver, items)


def _deliver(items: list[tuple[Ticket, Update | None]]) -> None:
    """On the event loop: each update to its request's queue (None: the engine failed)."""
    for ticket, update in items:
        ticket.queue.put_nowait((ticket, update))
