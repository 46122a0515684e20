"""The server's own background loop: re-reading the signing keys."""

from __future__ import annotations

import logging

from extauthz.errors import KeyLoadError
from extauthz.keys.keyring import KeyRing
from extauthz.loops import Loop

log = logging.getLogger("extauthz")


class KeyReloader:
    """Re-reads the key directory every ``interval`` seconds (:meth:`start`/:meth:`stop`):
    new keys are published, the signing key moves on once a newer one has been published
    long enough. A file that cannot be loaded is logged and skipped (removals still apply); a
    directory with no usable key left is logged and the keys in use are kept."""

    def __init__(self, keyring: KeyRing, interval: float) -> None:
        self._keyring = keyring
        self._loop = Loop(
            "key-reload", self._step, interval=interval, first_delay=interval, logger=log
        )

    async def _step(self) -> None:
        ring = self._keyring
        try:
            changed = ring.reload()
        except KeyLoadError as exc:
            log.error("signing keys not reloaded, keeping the current ones: %s", exc)
            return
        for reason in ring.skipped:
            log.error("signing key file skipped: %s", reason)
        if changed:
            log.info(
                "signing keys reloaded: published=%s signing_kid=%s",
                ",".join(ring.kids),
                ring.signing_key.kid,
            )

    @property
    def running(self) -> bool:
        return self._loop.running

    async def start(self) -> None:
        await self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
