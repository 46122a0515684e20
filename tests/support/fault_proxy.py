"""A TCP relay that misbehaves on demand: Redis down, hanging, slow or half-open, without
touching Redis. Built on :class:`~tests.support.tcp_proxy.TcpProxy` (its thread, loop, relay
and :meth:`cut`/:meth:`restore`); it adds, on the client's side of each relayed connection:

- :meth:`FaultProxy.freeze` / :meth:`thaw`: bytes stop flowing both ways on every connection
  (old and new) but nothing is closed: a hanging server or a half-open link;
- :meth:`FaultProxy.reset`: every relayed connection is reset now (new ones are relayed);
- :meth:`FaultProxy.set_latency`: each chunk waits that many seconds before it is relayed.
"""

from __future__ import annotations

import asyncio
from typing import cast

from tests.support.tcp_proxy import TcpProxy


class _Gate:
    """Held while frozen, then the latency: what every relayed chunk passes."""

    def __init__(self) -> None:
        self.latency = 0.0
        self.flowing: asyncio.Event | None = None  # made in the relay's loop

    def event(self) -> asyncio.Event:
        if self.flowing is None:
            self.flowing = asyncio.Event()
            self.flowing.set()
        return self.flowing

    async def passage(self) -> None:
        await self.event().wait()
        if self.latency > 0:
            await asyncio.sleep(self.latency)


class _GatedReader:
    """The client's reader as the relay sees it (client to server)."""

    def __init__(self, reader: asyncio.StreamReader, gate: _Gate) -> None:
        self._reader, self._gate = reader, gate

    async def read(self, n: int) -> bytes:
        data = await self._reader.read(n)
        if data:
            await self._gate.passage()
        return data


class _GatedWriter:
    """The client's writer as the relay sees it (server to client): ``write`` holds the
    bytes, ``drain`` passes the gate and sends them."""

    def __init__(self, writer: asyncio.StreamWriter, gate: _Gate) -> None:
        self._writer, self._gate = writer, gate
        self._held: list[bytes] = []
        self.transport = writer.transport

    def write(self, data: bytes) -> None:
        self._held.append(data)

    async def drain(self) -> None:
        await self._gate.passage()
        held, self._held = b"".join(self._held), []
        self._writer.write(held)
        await self._writer.drain()


class FaultProxy(TcpProxy):
    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__(target)
        self._gate = _Gate()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await super()._handle(
            cast(asyncio.StreamReader, _GatedReader(reader, self._gate)),
            cast(asyncio.StreamWriter, _GatedWriter(writer, self._gate)),
        )

    def freeze(self) -> None:
        """Hold every byte from now on (connections stay open)."""

        async def freeze() -> None:
            self._gate.event().clear()

        self._call(freeze())

    def thaw(self) -> None:
        """Relay again, the held bytes first."""

        async def thaw() -> None:
            self._gate.event().set()

        self._call(thaw())

    def reset(self) -> None:
        """Reset every relayed connection; new ones are relayed."""
        self.cut()
        self.restore()

    def set_latency(self, seconds: float) -> None:
        """Delay each relayed chunk by ``seconds``."""
        self._gate.latency = seconds
