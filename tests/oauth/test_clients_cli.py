"""``extauthz clients add|list|remove``: straight in the store of the settings file (JSON
file, Redis) and through a running node's ClientAdmin (``--target``), which also revokes the
removed client's tokens."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis.asyncio

from extauthz.cli import build_parser, main
from extauthz.errors import Unauthenticated
from extauthz.oauth.clients import ClientStore, FileClientStore, MemoryClientStore
from extauthz.oauth.clients_cli import run_clients_command, store_registry
from extauthz.store.redis.oauth_clients import RedisClientStore
from tests.fixtures.client_admin import FAST_HASHER as FAST
from tests.fixtures.client_admin import client_admin_node
from tests.fixtures.core import ADMIN_TOKEN, build_harness
from tests.support import RedisServer

APP = "https://app.example/callback"


def run(argv: list[str], store: ClientStore) -> tuple[int, str, str]:
    """The command on ``store`` with cheap argon2 (the CLI's own wiring: see main below)."""
    out, err = io.StringIO(), io.StringIO()

    @asynccontextmanager
    async def opened() -> AsyncIterator[ClientStore]:
        yield store

    args = build_parser().parse_args(argv)
    code = run_clients_command(args, store_registry(opened(), FAST), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def fields(out: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in out.splitlines())


def test_add_list_remove(tmp_path: Path) -> None:
    store = FileClientStore(tmp_path / "clients.json")
    code, out, err = run(["clients", "add", "--name", "Reporting", "--redirect-uri", APP,
                          "--redirect-uri", "http://127.0.0.1:8400/cb", "--scope", "read",
                          "--scope", "write"], store)
    assert code == 0 and "shown only now" in err
    added = fields(out)
    assert set(added) == {"client_id", "client_secret"} and len(added["client_secret"]) == 43
    client = asyncio.run(store.get(added["client_id"]))
    assert client is not None and client.verify_secret(added["client_secret"])
    assert client.redirect_uris == (APP, "http://127.0.0.1:8400/cb")

    code, out, _ = run(["clients", "add", "--name", "Mobile app", "--redirect-uri", APP,
                        "--scope", "read", "--public"], store)
    assert code == 0 and list(fields(out)) == ["client_id"]
    mobile = fields(out)["client_id"]

    code, out, _ = run(["clients", "list"], store)
    assert code == 0
    assert sorted(out.splitlines()) == sorted([  # oldest first; within a second by id
        f"{added['client_id']}\tname=Reporting\ttype=confidential\tscopes=read write"
        f"\tredirect_uris={APP} http://127.0.0.1:8400/cb",
        f"{mobile}\tname=Mobile app\ttype=public\tscopes=read\tredirect_uris={APP}",
    ])
    assert added["client_secret"] not in out and "argon2" not in out

    code, out, err = run(["clients", "remove", added["client_id"]], store)
    assert (code, out) == (0, f"removed {added['client_id']}\n")
    assert "stay valid until they expire" in err and "--target" in err
    assert [c.client_id for c in asyncio.run(store.list())] == [mobile]


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["add", "--name", "A", "--redirect-uri", "https://a.example/#f", "--scope", "r"], 2,
         "fragment"),
        (["add", "--name", "A", "--redirect-uri", "http://a.example/", "--scope", "r"], 2,
         "loopback"),
        (["add", "--name", "A", "--redirect-uri", APP, "--scope", "a\\b"], 2, "scope token"),
        (["add", "--name", "", "--redirect-uri", APP, "--scope", "r"], 2, "client name"),
        (["add", "--name", "A", "--scope", "r", "--public"], 2, "at least one redirect URI"),
        (["remove", "ghost"], 1, "no client 'ghost'"),
        (["remove", "a/b"], 2, "client id"),
    ],
)
def test_errors(argv: list[str], code: int, message: str) -> None:
    store = MemoryClientStore()
    got, out, err = run(["clients", *argv], store)
    assert (got, out) == (code, "") and message in err
    assert asyncio.run(store.list()) == []


def test_a_bad_client_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    path.write_text("{broken")
    code, _, err = run(["clients", "list"], FileClientStore(path))
    assert code == 1 and str(path) in err and "not valid JSON" in err


def test_arguments() -> None:
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["clients", "add", "--name", "A", "--redirect-uri", APP])  # no scope
    with pytest.raises(SystemExit):
        parser.parse_args(["clients"])
    args = parser.parse_args(["clients", "remove", "--", "-starts-with-dash"])
    assert args.client_id == "-starts-with-dash"


def settings_file(tmp_path: Path, **tables: dict[str, str]) -> str:
    path = tmp_path / "extauthz.toml"
    path.write_text("".join(
        f"[{table}]\n" + "".join(f'{k} = "{v}"\n' for k, v in values.items())
        for table, values in tables.items()
    ))
    return str(path)


def test_main_uses_the_settings_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clients = tmp_path / "clients.json"
    config = settings_file(tmp_path, oauth_clients={"file": str(clients)})
    assert main(["clients", "add", "--name", "CI", "--scope", "deploy", "--config", config]) == 0
    added = fields(capsys.readouterr().out)
    assert stat.S_IMODE(os.stat(clients).st_mode) == 0o600
    stored = asyncio.run(FileClientStore(clients).get(added["client_id"]))
    assert stored is not None and stored.verify_secret(added["client_secret"])  # production argon2
    assert main(["clients", "list", "--config", config]) == 0
    assert capsys.readouterr().out.startswith(f"{added['client_id']}\tname=CI\t")
    assert main(["clients", "remove", added["client_id"], "--config", config]) == 0
    assert main(["clients", "remove", added["client_id"], "--config", config]) == 1


@pytest.mark.e2e
def test_main_with_the_redis_backend(
    tmp_path: Path, redis_process: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    config = settings_file(
        tmp_path,
        store={"backend": "redis", "strategy": "central", "redis_url": redis_process.url,
               "key_prefix": "cli:"},
        oauth_clients={"backend": "redis"},
    )  # fmt: skip
    assert main(["clients", "add", "--name", "CI", "--scope", "deploy", "--public",
                 "--redirect-uri", APP, "--config", config]) == 0
    client_id = fields(capsys.readouterr().out)["client_id"]

    async def stored() -> list[str]:
        client = redis.asyncio.Redis.from_url(redis_process.url)
        try:
            return [c.client_id for c in await RedisClientStore(client, "cli:").list()]
        finally:
            await client.aclose()

    assert asyncio.run(stored()) == [client_id]
    assert main(["clients", "remove", client_id, "--config", config]) == 0
    assert asyncio.run(stored()) == []


def run_main(*argv: str) -> tuple[int, str, str]:
    """``extauthz clients ...`` as the command line runs it (its own event loop)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["clients", *argv])
    return code, out.getvalue(), err.getvalue()


async def test_target_goes_through_the_admin_api_and_revokes(tmp_path: Path) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text(ADMIN_TOKEN)
    store, harness = MemoryClientStore(), build_harness(tmp_path)
    async with client_admin_node(harness, store) as node:
        target = ["--target", node.target, "--admin-token-file", str(token_file)]

        async def cli(*argv: str) -> tuple[int, str, str]:  # the node serves on this loop
            return await asyncio.to_thread(run_main, *argv, *target)

        code, out, _ = await cli("add", "--name", "Batch", "--scope", "read")
        assert code == 0
        added = fields(out)
        stored = await store.get(added["client_id"])
        assert stored is not None and stored.verify_secret(added["client_secret"])
        token, _ = await harness.sessions.create(
            f"client:{added['client_id']}", kind="oauth", client_id=added["client_id"],
            lifetime_seconds=600,
        )
        code, out, _ = await cli("list")
        assert code == 0 and out.startswith(f"{added['client_id']}\tname=Batch\t")
        code, _, err = await cli("add", "--name", "X", "--scope", "r", "--redirect-uri",
                                 "http://x.example/")
        assert code == 2 and "loopback" in err
        code, out, err = await cli("remove", added["client_id"])
        assert (code, out, err) == (0, f"removed {added['client_id']}; revoked 1 tokens\n", "")
        with pytest.raises(Unauthenticated):
            await harness.sessions.lookup(token)
        assert await store.list() == []
        # a wrong token: UNAUTHENTICATED from the node, an error from the CLI
        token_file.write_text("wrong-token-0123456789abcdef")
        code, _, err = await cli("list")
        assert code == 1 and "UNAUTHENTICATED" in err
