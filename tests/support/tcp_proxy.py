"""A TCP relay on loopback that injects faults between two real processes (extauthz and Redis,
a Redis replica and its primary) without touching either.

It runs its own event loop in a thread, so it keeps relaying while the test's loop is busy
or blocked in a synchronous wait. Faults, each switched from the test at any time:

* :meth:`TcpProxy.set_latency`: every chunk is held for that many seconds, each direction;
* :meth:`TcpProxy.freeze` / :meth:`TcpProxy.thaw`: nothing is relayed (connections stay open,
  bytes queue up), like a process stopped with ``SIGSTOP``; new connections are accepted and
  wait too; :meth:`TcpProxy.freeze_later` freezes after a delay, on the proxy's own loop, so
  :meth:`TcpProxy.heal` and :meth:`TcpProxy.close` cancel it if it has not fired;
* :meth:`TcpProxy.reset`: every relayed connection is aborted (both ends see a reset), new
  ones are still accepted;
* :meth:`TcpProxy.cut` / :meth:`TcpProxy.restore`: reset, and refuse new connections until
  restored (a partition);
* :meth:`TcpProxy.drop`: bytes in both directions are read and thrown away (a black hole);
* :meth:`TcpProxy.half_open`: the server's answers are thrown away, the client's requests still
  reach it (the client waits for replies that never come, the server sees every write).

    with TcpProxy(primary.address) as proxy:
        replica = RedisNode(tmp / "r", replicaof=proxy.address)
        ...
        proxy.cut()
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, Self, TypeVar

from harness.ports import LOOPBACK as HOST
from harness.ports import free_port

T = TypeVar("T")

UPSTREAM = "upstream"  # client -> server
DOWNSTREAM = "downstream"  # server -> client


class TcpProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.open = True
        self.latency = 0.0
        self.dropping: set[str] = set()  # directions whose bytes are thrown away
        self.accepted = 0  # connections accepted since start
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None  # cleared while frozen
        self._later: set[asyncio.TimerHandle] = set()  # freezes scheduled by freeze_later

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop.is_closed() or not self._thread.is_alive():
            coro.close()  # never scheduled: no "never awaited" warning at some later test
            raise RuntimeError("TcpProxy is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=5)

    def start(self) -> Self:
        self._thread.start()

        async def listen() -> None:
            self._flowing = asyncio.Event()
            self._flowing.set()
            self._server = await asyncio.start_server(self._handle, HOST, self.port)

        self._call(listen())
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.transport.abort()
            return
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer, up_writer}
        self._writers |= pair
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, UPSTREAM), self._pipe(up_reader, writer, DOWNSTREAM)
            )
        finally:
            self._writers -= pair

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, direction: str
    ) -> None:
        assert self._flowing is not None
        try:
            while data := await src.read(65536):
                if self.latency > 0:
                    await asyncio.sleep(self.latency)
                await self._flowing.wait()
                if direction in self.dropping:
                    continue
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            dst.transport.abort()

    # -- faults -----------------------------------------------------------------------------

    def set_latency(self, seconds: float) -> None:
        """Hold every chunk ``seconds`` before relaying it (each direction); 0 for none."""
        self.latency = seconds

    def freeze(self) -> None:
        """Relay nothing until :meth:`thaw`; connections stay open and their bytes queue."""

        async def freeze() -> None:
            assert self._flowing is not None
            self._flowing.clear()

        self._call(freeze())

    def freeze_later(self, seconds: float) -> None:
        """:meth:`freeze` ``seconds`` from now, unless :meth:`heal` or :meth:`close` comes
        first."""

        async def schedule() -> None:
            assert self._flowing is not None
            self._later.add(self._loop.call_later(seconds, self._flowing.clear))

        self._call(schedule())

    def thaw(self) -> None:
        """Relay again, queued bytes first; a pending :meth:`freeze_later` is cancelled."""

        async def thaw() -> None:
            assert self._flowing is not None
            for handle in self._later:
                handle.cancel()
            self._later.clear()
            self._flowing.set()

        self._call(thaw())

    def drop(self) -> None:
        """Throw away every byte, both directions, until :meth:`heal`."""
        self.dropping = {UPSTREAM, DOWNSTREAM}

    def half_open(self) -> None:
        """Throw away the server's answers (requests still reach it) until :meth:`heal`."""
        self.dropping = {DOWNSTREAM}

    def heal(self) -> None:
        """End every fault but a cut: no latency, no freeze, nothing dropped."""
        self.latency = 0.0
        self.dropping = set()
        self.thaw()

    def reset(self) -> None:
        """Abort every relayed connection (both ends see a reset); new ones are accepted."""

        async def reset() -> None:
            for writer in list(self._writers):
                writer.transport.abort()

        self._call(reset())

    def cut(self) -> None:
        """Refuse new connections and reset every relayed one."""
        self.open = False
        self.reset()

    def restore(self) -> None:
        """Accept (and relay) new connections again."""
        self.open = True

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self.heal()
            self.cut()

        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._call(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
