"""The one boundary between redis-py and the rest of extauthz.

Every call into redis-py goes through :func:`store_errors` (a context manager) or
:func:`translated` (the same as a method decorator): a ``redis.exceptions.RedisError`` or an
``OSError`` (refused, reset, timed out) leaves it as
:class:`~extauthz.errors.StoreUnavailable` naming the operation (gRPC ``UNAVAILABLE``,
HTTP 503), never as a redis-py type. :func:`demoted` tells whether an error came from a node
that is no longer the primary (``READONLY`` after a failover), :func:`repointed` whether an
operation that failed so may be tried again on the primary named now.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, TypeVar

from redis.asyncio.connection import ConnectionPool
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ReadOnlyError, RedisError

from extauthz.errors import StoreUnavailable, StoreWriteNotDurable

__all__ = [
    "StoreUnavailable",
    "StoreWriteNotDurable",
    "demoted",
    "repointed",
    "store_errors",
    "text",
    "translated",
]

P = ParamSpec("P")
T = TypeVar("T")

# what redis-py raises when a server cannot be reached or answers with an error
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)

_DEMOTED_SIGNS = (
    "previous master is now a slave",  # redis-py's Sentinel connection on READONLY
    "WAIT cannot be used with replica",
)


@asynccontextmanager
async def store_errors(what: str) -> AsyncIterator[None]:
    """Turn any redis-py error raised inside into :class:`StoreUnavailable` naming ``what``
    (``"redis <what>: <error class>: <message>"``), chained to the original."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise StoreUnavailable(f"redis {what}: {exc.__class__.__name__}: {exc}") from exc


def translated(
    what: str,
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Coroutine[Any, Any, T]]]:
    """Decorate a coroutine function so that it raises :class:`StoreUnavailable` instead of
    a redis-py error (:func:`store_errors` around the whole call)."""

    def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            async with store_errors(what):
                return await fn(*args, **kwargs)

        return wrapper

    return decorate


def demoted(exc: BaseException) -> bool:
    """Did ``exc`` come from a node that is no longer the primary (``READONLY``, or ``WAIT``
    refused by a replica)? Looks through a :class:`StoreUnavailable` to its cause."""
    if isinstance(exc, StoreUnavailable) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, ReadOnlyError):
        return True
    return isinstance(exc, RedisError) and any(sign in str(exc) for sign in _DEMOTED_SIGNS)


async def repointed(pool: ConnectionPool, exc: StoreUnavailable) -> bool:
    """After ``exc`` from an operation on ``pool``'s primary: should it be tried again? Yes
    when the node was demoted, or when ``WAIT`` fell short (:class:`StoreWriteNotDurable`)
    and the Sentinels now name another primary; then every pooled connection is dropped, so
    the next ones connect to the primary named now."""
    was_demoted = demoted(exc)
    if not was_demoted and not isinstance(exc, StoreWriteNotDurable):
        return False
    if isinstance(pool, SentinelConnectionPool):
        before = pool.master_address
        try:
            async with store_errors("discover primary"):
                after = await pool.get_master_address()
        except StoreUnavailable:
            return False
        if not was_demoted and after == before:
            return False  # WAIT fell short on the real primary: a genuine failure
    elif not was_demoted:
        return False
    await pool.disconnect()
    return True


def text(value: Any) -> str:
    """A reply item as text (replies are bytes unless ``decode_responses``)."""
    return value.decode() if isinstance(value, bytes) else str(value)
