"""Named records in one JSON file, the ground of the file-backed stores (users, OAuth clients).

The file is ``{"version": N, "<section>": {"<key>": {...entry...}}}``, mode 0600, written
atomically (temp file in the same directory, ``fsync``, ``os.replace``, directory ``fsync``),
validated on every (re)load: a bad file raises the store's error naming the file and the entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

R = TypeVar("R")


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A ``json.loads`` ``object_pairs_hook`` that refuses a key given twice (``ValueError``)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def list_field(entry: Mapping[str, Any], key: str) -> list[str]:
    """``entry[key]`` (default ``[]``) if it is a list; ``ValueError`` otherwise."""
    value = entry.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{key} must be a list of strings")
    return value


class RecordFile(Generic[R]):
    """Records ``R`` keyed by string in one JSON file.

    ``parse(key, entry)`` builds a record from a decoded entry (``ValueError`` saying what is
    wrong); ``dump(record)`` gives the entry to write. ``error`` is the store's exception for a
    bad file; ``noun`` names an entry in its messages (``"user"``: ``<path>: user 'alice': ...``).
    Reads re-parse the file only when it changed (inode, mtime, size), so edits by another
    process show up. Writes are read-modify-write under an exclusive ``flock`` on
    ``<path>.lock``. File I/O runs in a worker thread. Raises ``error`` for a bad file,
    ``OSError`` for I/O failures.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        version: int,
        section: str,
        noun: str,
        parse: Callable[[str, Any], R],
        dump: Callable[[R], dict[str, Any]],
        error: Callable[[str], Exception],
        log: logging.Logger,
    ) -> None:
        self.path = Path(path)
        self._version, self._section, self._noun = version, section, noun
        self._parse, self._dump, self._error, self._log = parse, dump, error, log
        self._lock = asyncio.Lock()
        self._cache: tuple[tuple[int, int, int], dict[str, R]] | None = None
        self._warned_mode = False

    async def read(self) -> Mapping[str, R]:
        """Every record by key (an empty mapping when the file does not exist)."""
        return await asyncio.to_thread(self._load)

    async def modify(self, change: Callable[[dict[str, R]], bool]) -> bool:
        """Run ``change`` on a fresh copy of the records under the file lock; when it answers
        ``True``, write the result. Returns what ``change`` answered."""
        async with self._lock:
            return await asyncio.to_thread(self._modify_locked, change)

    # -- implementation (runs in worker threads)

    def _parse_text(self, text: str) -> dict[str, R]:
        path, section = self.path, self._section
        try:
            doc = json.loads(text, object_pairs_hook=no_duplicate_keys)
        except json.JSONDecodeError as exc:
            raise self._error(f"{path}: not valid JSON: {exc}") from None
        except ValueError as exc:
            raise self._error(f"{path}: {exc}") from None
        if not isinstance(doc, dict) or doc.get("version") != self._version or not isinstance(
            doc.get(section), dict
        ):
            raise self._error(
                f'{path}: expected an object {{"version": {self._version}, "{section}": {{...}}}}'
            )
        records: dict[str, R] = {}
        for key, entry in doc[section].items():
            where = f"{path}: {self._noun} {key[:80]!r}"
            if not isinstance(entry, dict):
                raise self._error(f"{where}: entry must be an object")
            try:
                records[key] = self._parse(key, entry)
            except ValueError as exc:
                raise self._error(f"{where}: {exc}") from None
        return records

    def _load(self) -> dict[str, R]:
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                key = (st.st_ino, st.st_mtime_ns, st.st_size)
                cached = self._cache
                if cached is not None and cached[0] == key:
                    return cached[1]
                data = f.read()
        except FileNotFoundError:
            return {}
        if st.st_mode & 0o077 and not self._warned_mode:
            self._warned_mode = True
            self._log.warning(
                "%s file %s has mode %o; it should be 0600",
                self._noun, self.path, st.st_mode & 0o777,
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self._error(f"{self.path}: not UTF-8: {exc}") from None
        records = self._parse_text(text)
        self._cache = (key, records)
        return records

    def _modify_locked(self, change: Callable[[dict[str, R]], bool]) -> bool:
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._cache = None  # another process may have written since our last read
            records = dict(self._load())
            changed = change(records)
            if changed:
                self._write(records)
            return changed
        finally:
            os.close(fd)  # releases the flock

    def _write(self, records: Mapping[str, R]) -> None:
        doc = {
            "version": self._version,
            self._section: {key: self._dump(records[key]) for key in sorted(records)},
        }
        directory = self.path.parent
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp creates it 0600
                json.dump(doc, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
