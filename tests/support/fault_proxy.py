"""A TCP relay that misbehaves on demand: Redis down, hanging, slow or half-open, without
touching Redis. Built on :class:`~tests.support.tcp_proxy.TcpProxy` (its thread, loop and
:meth:`cut`/:meth:`restore`), it adds:

- :meth:`FaultProxy.freeze` / :meth:`thaw`: bytes stop flowing both ways on every connection
  (old and new) but nothing is closed: a hanging server or a half-open link;
- :meth:`FaultProxy.reset`: every relayed connection is reset now (new ones are relayed);
- :meth:`FaultProxy.set_latency`: each chunk waits that many seconds before it is relayed.
"""

from __future__ import annotations

import asyncio

from tests.support.tcp_proxy import TcpProxy


class FaultProxy(TcpProxy):
    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__(target)
        self.latency = 0.0
        self._flowing: asyncio.Event | None = None

    def _event(self) -> asyncio.Event:
        if self._flowing is None:  # created in the relay's loop
            self._flowing = asyncio.Event()
            self._flowing.set()
        return self._flowing

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
        try:
            await asyncio.gather(self._relay(reader, up_writer), self._relay(up_reader, writer))
        finally:
            self._writers -= pair

    async def _relay(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await self._event().wait()
                if self.latency > 0:
                    await asyncio.sleep(self.latency)
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            dst.transport.abort()

    def freeze(self) -> None:
        """Hold every byte from now on (connections stay open)."""

        async def freeze() -> None:
            self._event().clear()

        self._call(freeze())

    def thaw(self) -> None:
        """Relay again, the held bytes first."""

        async def thaw() -> None:
            self._event().set()

        self._call(thaw())

    def reset(self) -> None:
        """Reset every relayed connection; new ones are relayed."""
        self.cut()
        self.restore()

    def set_latency(self, seconds: float) -> None:
        """Delay each relayed chunk by ``seconds``."""
        self.latency = seconds
