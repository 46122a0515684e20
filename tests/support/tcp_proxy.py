"""A TCP relay on loopback whose link can be cut and restored: a network partition between
two real processes (e.g. a Redis replica and its primary) without touching either.

It runs its own event loop in a thread, so it keeps relaying while the test's loop is busy
or blocked in a synchronous wait. :meth:`TcpProxy.cut` aborts every relayed connection
(both ends see a reset) and refuses new ones until :meth:`TcpProxy.restore`.

    with TcpProxy(primary.address) as proxy:
        replica = RedisNode(tmp / "r", replicaof=proxy.address)
        ...
        proxy.cut()
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Self

from harness.ports import LOOPBACK as HOST
from harness.ports import free_port


class TcpProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.open = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _call(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=5)  # type: ignore[arg-type]

    def start(self) -> Self:
        self._thread.start()

        async def listen() -> None:
            self._server = await asyncio.start_server(self._handle, HOST, self.port)

        self._call(listen())
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer, up_writer}
        self._writers |= pair

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers -= pair

    def cut(self) -> None:
        """Refuse new connections and reset every relayed one."""

        async def cut() -> None:
            self.open = False
            for writer in list(self._writers):
                writer.transport.abort()

        self._call(cut())

    def restore(self) -> None:
        """Accept (and relay) new connections again."""
        self.open = True

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
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
