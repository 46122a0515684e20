"""The ``extauthz users`` command: add, remove, list users and set passwords in a user store.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass as _getpass
import sys
from collections.abc import Callable
from typing import TextIO

from extauthz.login.users.file_store import FileUserStore
from extauthz.login.users.passwords import (
    PRODUCTION_PARAMETERS,
    Argon2Parameters,
    PasswordVerifier,
)
from extauthz.login.users.records import (
    UserStoreError,
    validate_name,
    validate_password,
)
from extauthz.scopes import validate_scope_tokens


def add_users_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    extra: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None] | None = None,
) -> argparse.ArgumentParser:
    """Add ``users add|remove|passwd|list --file PATH`` to a CLI; returns the ``users`` parser.

    The parsed namespace has ``users_command`` set and ``func`` = :func:`run_users_command`
    (the convention of ``extauthz.cli``). ``extra`` adds more actions (``users mfa``, which
    sets its own ``func``).
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--file", required=True, metavar="PATH",
                        help="JSON user file (created with mode 0600 if missing)")
    stdin_flag = argparse.ArgumentParser(add_help=False)
    stdin_flag.add_argument("--password-stdin", action="store_true",
                            help="read the password from the first line of standard input")

    users = subparsers.add_parser("users", help="manage users in a JSON user file")
    actions = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", parents=[common, stdin_flag], help="add a user")
    add.add_argument("name")
    add.add_argument("--role", action="append", default=[], metavar="ROLE")
    add.add_argument("--scope", action="append", default=[], metavar="SCOPE")
    remove = actions.add_parser("remove", parents=[common], help="remove a user")
    remove.add_argument("name")
    passwd = actions.add_parser("passwd", parents=[common, stdin_flag], help="set a password")
    passwd.add_argument("name")
    actions.add_parser("list", parents=[common], help="list users")
    users.set_defaults(func=run_users_command)
    if extra is not None:
        extra(actions)
    return users


class _CommandError(Exception):
    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def run_users_command(
    args: argparse.Namespace,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    getpass: Callable[[str], str] = _getpass.getpass,
    parameters: Argon2Parameters = PRODUCTION_PARAMETERS,
) -> int:
    """Run a parsed ``users`` command and return the exit status.

    Synchronous: it runs its own event loop (``asyncio.run``), so call it from the CLI, not
    from inside a running loop.

    0: done; 1: the command failed (user exists or is unknown, passwords differ, bad user
    file, I/O error); 2: invalid input (name, role, scope, password). Messages go to ``stderr``.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        return asyncio.run(_run(args, stdin or sys.stdin, out, getpass, parameters))
    except _CommandError as exc:
        print(f"extauthz users: error: {exc}", file=err)
        return exc.status
    except ValueError as exc:
        print(f"extauthz users: error: {exc}", file=err)
        return 2
    except (UserStoreError, OSError) as exc:
        print(f"extauthz users: error: {exc}", file=err)
        return 1


def _read_password(args: argparse.Namespace, stdin: TextIO,
                   getpass: Callable[[str], str]) -> str:
    if args.password_stdin:
        line = stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password[:-1] if password.endswith("\r") else password
    else:
        try:
            password = getpass(f"Password for {args.name}: ")
            repeated = getpass("Repeat password: ")
        except EOFError:  # no terminal and nothing on stdin: a script without the flag
            raise _CommandError("no password given: type it on a terminal or pass "
                                "--password-stdin and write it to standard input", 2) from None
        if repeated != password:
            raise _CommandError("passwords do not match")
    try:
        return validate_password(password)
    except ValueError as exc:
        raise _CommandError(str(exc), 2) from None


async def _run(args: argparse.Namespace, stdin: TextIO, out: TextIO,
               getpass: Callable[[str], str], parameters: Argon2Parameters) -> int:
    store = FileUserStore(args.file)
    command = args.users_command
    if command == "list":
        for name in await store.names():
            record = await store.get(name)
            if record is not None:
                state = "\tdisabled" if record.disabled else ""
                print(f"{name}\troles={','.join(record.roles)}\tscopes={','.join(record.scopes)}"
                      f"{state}", file=out)
        return 0
    name = validate_name(args.name)
    if command == "remove":
        if not await store.remove(name):
            raise _CommandError(f"no user {name!r} in {store.path}")
        print(f"removed {name}", file=out)
        return 0
    verifier = PasswordVerifier(store, parameters)
    if command == "add":
        roles = validate_scope_tokens("roles", args.role)
        scopes = validate_scope_tokens("scopes", args.scope)
        if await store.get(name) is not None:
            raise _CommandError(f"user {name!r} already exists in {store.path}; use 'users passwd'")
        password_hash = await verifier.hash_password_async(_read_password(args, stdin, getpass))
        await store.put(name, password_hash, roles, scopes)
        print(f"added {name}", file=out)
        return 0
    if command == "passwd":
        if await store.get(name) is None:
            raise _CommandError(f"no user {name!r} in {store.path}")
        password_hash = await verifier.hash_password_async(_read_password(args, stdin, getpass))
        if not await store.set_password_hash(name, password_hash):
            raise _CommandError(f"user {name!r} was removed meanwhile")
        print(f"password of {name} changed", file=out)
        return 0
    raise _CommandError(f"unknown users command {command!r}", 2)
