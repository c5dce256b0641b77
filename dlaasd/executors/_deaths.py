"""Containers' deaths as the Docker Engine's event stream reports them. The `die` event
comes before the engine answers a wait call (11 ms before, the median on 2 cores with two
containers at a time), time in which a finished run still held its slot.

Best effort: a container the stream may have missed (it was down, or subscribed again
after the container started) gets None, and its waiter asks the engine instead. The
engine drops events for a subscriber that falls behind (a send timeout in moby's
pubsub), so a waiter also looks at its container now and then (local.py)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger(__name__)

REMEMBERED = 10_000  # deaths kept until their containers are removed (forget)


class Deaths:
    def __init__(self, api: Callable[[], Any], label: str) -> None:
        """`api`: the engine's low-level client now; `label`: the one filter (key or
        key=value) that all the containers to follow carry."""
        self._api = api
        self._label = label
        self._lock = threading.Lock()
        self._waiting: dict[str, list[Future[int | None]]] = {}  # a run resumed: two
        self._died: dict[str, int] = {}  # exit codes, by container id, until forgotten
        self._subscriptions = 0  # how many the stream had; the last one counts while live
        self._live = False
        self._thread: threading.Thread | None = None
        self._subscribed = threading.Event()
        self.stream: Any = None  # the engine's answer while subscribed (close() ends it)

    def watching(self) -> int:
        """The subscription that will see a container started from now on die; 0 when
        the stream is down. The first call starts the stream (and waits a second for it)."""
        with self._lock:  # two runs may start at once
            if self._thread is None:
                self._thread = threading.Thread(target=self._follow, daemon=True, name="deaths")
                self._thread.start()
        self._subscribed.wait(1)
        with self._lock:
            return self._subscriptions if self._live else 0

    def exit_code(self, container: str, subscription: int, timeout: float | None) -> int | None:
        """The exit code of `container` once it dies (it was started while `subscription`
        was live); None if the stream may not see it die. TimeoutError after `timeout`."""
        with self._lock:
            if container in self._died:  # asked again (a run resumed), or dead before
                return self._died[container]
            if not self._live or subscription != self._subscriptions:
                return None
            future: Future[int | None] = Future()
            self._waiting.setdefault(container, []).append(future)
        try:
            return future.result(timeout)  # TimeoutError (concurrent.futures' is the same)
        finally:
            with self._lock:
                futures = self._waiting.get(container, [])
                if future in futures:
                    futures.remove(future)
                if not futures:
                    self._waiting.pop(container, None)

    def forget(self, container: str) -> None:
        """A removed container: no death of it to keep."""
        with self._lock:
            self._died.pop(container, None)

    def _follow(self) -> None:
        while True:
            try:
                # from a second back: the engine answers before it subscribes, and a
                # container that dies in between would be missed
                self.stream = self._api().events(
                    since=int(time.time()) - 1,
                    filters={"type": "container", "event": "die", "label": self._label},
                    decode=True,
                )
            except Exception as exc:  # the engine is down: its waiters ask it again later
                log.debug("event=deaths_unsubscribed error=%r", str(exc))
                time.sleep(1)
                continue
            with self._lock:
                self._subscriptions += 1
                self._live = True
            self._subscribed.set()
            try:
                for event in self.stream:
                    attributes = event.get("Actor", {}).get("Attributes", {})
                    self._died_now(event.get("id", ""), int(attributes.get("exitCode", -1)))
            except Exception as exc:
                log.debug("event=deaths_stream_lost error=%r", str(exc))
            self._lost()
            time.sleep(1)

    def _died_now(self, container: str, code: int) -> None:
        with self._lock:
            futures = self._waiting.pop(container, [])
            if len(self._died) >= REMEMBERED:
                self._died.pop(next(iter(self._died)))  # the oldest
            self._died[container] = code
        for future in futures:
            future.set_result(code)

    def _lost(self) -> None:
        """The stream ended (the engine stopped or restarts): every waiter asks the engine,
        and the next subscription counts as another (what died meanwhile was not seen)."""
        with self._lock:
            self._live = False
            waiting = [f for futures in self._waiting.values() for f in futures]
            self._waiting = {}
        for future in waiting:
            future.set_result(None)
