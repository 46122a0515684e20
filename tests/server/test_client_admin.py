"""``extauthz.v1.ClientAdmin`` over a real gRPC socket: the admin token guards every call,
the secret is answered once and never again, bad input is INVALID_ARGUMENT, a client store that
cannot answer is UNAVAILABLE, and RemoveClient revokes the client's tokens at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from extauthz._proto.extauthz.v1 import admin_pb2
from extauthz.errors import Unauthenticated
from extauthz.keys.keyring import generate_key
from extauthz.oauth.clients import ClientStore, FileClientStore, MemoryClientStore
from tests.fixtures.client_admin import ClientAdminNode, client_admin_node
from tests.fixtures.core import ADMIN_METADATA, ADMIN_TOKEN, build_harness
from tests.support import ExtauthzProcess

APP = "https://app.example/callback"


Node = ClientAdminNode
StartNode = Callable[..., Awaitable[Node]]


@pytest.fixture
async def node_factory(tmp_path: Path) -> AsyncIterator[StartNode]:
    async with contextlib.AsyncExitStack() as stack:

        async def start(clients: ClientStore | None = None, token: str | None = ADMIN_TOKEN
                        ) -> Node:
            store = clients if clients is not None else MemoryClientStore()
            return await stack.enter_async_context(
                client_admin_node(build_harness(tmp_path), store, token)
            )

        yield start


@pytest.fixture
async def node(node_factory: StartNode) -> Node:
    return await node_factory()


async def add(node: Node, **fields: Any) -> admin_pb2.AddClientResponse:
    request = admin_pb2.AddClientRequest(
        **{"name": "Reporting", "redirect_uris": [APP], "scopes": ["read"], **fields}
    )
    reply: admin_pb2.AddClientResponse = await node.admin.AddClient(
        request, metadata=ADMIN_METADATA, timeout=10
    )
    return reply


CALLS = [
    ("AddClient", admin_pb2.AddClientRequest(name="X", redirect_uris=[APP], scopes=["read"])),
    ("ListClients", admin_pb2.ListClientsRequest()),
    ("RemoveClient", admin_pb2.RemoveClientRequest(client_id="abc")),
]


@pytest.mark.parametrize(("rpc", "request_message"), CALLS, ids=[c[0] for c in CALLS])
async def test_every_call_needs_the_admin_token(
    node_factory: StartNode, rpc: str, request_message: object
) -> None:
    node: Node = await node_factory()
    for metadata in [(), (("authorization", "Bearer wrong-token-0123456789"),)]:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await getattr(node.admin, rpc)(request_message, metadata=metadata, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    disabled: Node = await node_factory(token=None)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await getattr(disabled.admin, rpc)(request_message, metadata=ADMIN_METADATA, timeout=10)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await node.clients.list() == [] and await disabled.clients.list() == []


async def test_add_answers_the_secret_once_and_list_never(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reply = await add(node, name="Reporting", scopes=["read", "write"])
    secret = reply.client_secret
    assert len(secret) == 43
    assert reply.client.name == "Reporting" and reply.client.confidential
    assert list(reply.client.scopes) == ["read", "write"]
    assert reply.client.created_at.seconds == int(node.harness.clock())
    stored = await node.clients.get(reply.client.client_id)
    assert stored is not None and stored.verify_secret(secret)
    assert stored.secret_hash is not None

    node.harness.clock.advance(1)  # the list is oldest first
    public = await add(node, name="Mobile", redirect_uris=["http://127.0.0.1:8400/cb"],
                       public_client=True)
    assert public.client_secret == "" and not public.client.confidential

    listed = await node.admin.ListClients(
        admin_pb2.ListClientsRequest(), metadata=ADMIN_METADATA, timeout=10
    )
    assert [c.client_id for c in listed.clients] == [
        reply.client.client_id, public.client.client_id,
    ]
    wire = listed.SerializeToString()
    assert secret.encode() not in wire and stored.secret_hash.encode() not in wire
    assert b"argon2" not in wire
    assert "secret" not in json_format.MessageToJson(listed)
    assert f"oauth client added client_id={reply.client.client_id}" in caplog.text
    assert secret not in caplog.text and stored.secret_hash not in caplog.text


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"redirect_uris": ["https://app.example/cb#x"]}, "fragment"),
        ({"redirect_uris": ["http://app.example/cb"]}, "loopback"),
        ({"redirect_uris": ["https://u@app.example/cb"]}, "userinfo"),
        ({"redirect_uris": ["/relative"]}, "absolute"),
        ({"redirect_uris": ["https://*.app.example/"]}, "wildcard"),
        ({"redirect_uris": []}, None),  # confidential: client credentials only, fine
        ({"redirect_uris": [], "public_client": True}, "at least one redirect URI"),
        ({"scopes": ["a b"]}, "scope token"),
        ({"scopes": []}, "1-100 scopes"),
        ({"name": ""}, "client name"),
    ],
)
async def test_bad_input_is_invalid_argument(
    node: Node, fields: dict[str, Any], message: str | None
) -> None:
    if message is None:
        reply = await add(node, **fields)
        assert reply.client.client_id
        return
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await add(node, **fields)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (refused.value.details() or "")
    assert await node.clients.list() == []


async def test_remove_revokes_the_clients_tokens_at_once(node: Node) -> None:
    doomed = (await add(node, name="Doomed")).client.client_id
    node.harness.clock.advance(1)
    kept = (await add(node, name="Kept")).client.client_id
    sessions = node.harness.sessions
    doomed_tokens = [
        (await sessions.create(f"client:{doomed}", scopes=["read"], kind="oauth",
                               client_id=doomed, lifetime_seconds=600))[0]
        for _ in range(2)
    ]
    kept_token, _ = await sessions.create(f"client:{kept}", kind="oauth", client_id=kept,
                                          lifetime_seconds=600)
    login_token, _ = await sessions.create("alice")

    reply = await node.admin.RemoveClient(
        admin_pb2.RemoveClientRequest(client_id=doomed), metadata=ADMIN_METADATA, timeout=10
    )
    assert (reply.removed, reply.tokens_revoked) == (True, 2)
    assert await node.clients.get(doomed) is None
    for token in doomed_tokens:
        with pytest.raises(Unauthenticated):
            await sessions.lookup(token)
    assert (await sessions.lookup(kept_token)).client_id == kept
    assert (await sessions.lookup(login_token)).sub == "alice"

    again = await node.admin.RemoveClient(
        admin_pb2.RemoveClientRequest(client_id=doomed), metadata=ADMIN_METADATA, timeout=10
    )
    assert (again.removed, again.tokens_revoked) == (False, 0)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await node.admin.RemoveClient(
            admin_pb2.RemoveClientRequest(client_id="../x"), metadata=ADMIN_METADATA, timeout=10
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [c.client_id for c in await node.clients.list()] == [kept]


async def test_a_client_store_that_cannot_answer_is_unavailable(
    node_factory: StartNode, tmp_path: Path
) -> None:
    path = tmp_path / "clients.json"
    path.write_text("{not json")
    node: Node = await node_factory(FileClientStore(path))
    for rpc, request_message in CALLS:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await getattr(node.admin, rpc)(request_message, metadata=ADMIN_METADATA, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, rpc
        assert refused.value.details() == "client or session store unavailable"
    assert path.read_text() == "{not json"  # nothing was overwritten


@pytest.mark.e2e
def test_a_served_node_manages_the_clients_file_of_its_settings(tmp_path: Path) -> None:
    """``python -m extauthz serve`` wires ClientAdmin to the ``[oauth_clients]`` store: a client
    added straight in the file is listed by the node, removed through it, gone from the file."""
    keys, clients_file = tmp_path / "keys", tmp_path / "clients.json"
    generate_key(keys)
    config = tmp_path / "extauthz.toml"
    config.write_text(
        '[store]\nstrategy = "sticky"\nbackend = "memory"\n'
        f'[jwt]\nkeys_dir = "{keys}"\n'
        f'[oauth_clients]\nfile = "{clients_file}"\n'
    )
    node = ExtauthzProcess(config, tmp_path)
    node.start()
    try:
        added = dict(
            line.split("=", 1)
            for line in node.cli("clients", "add", "--name", "Batch", "--scope", "read",
                                 "--config", str(config)).splitlines()
        )
        listed = node.cli("clients", "list", "--target", node.grpc_target)
        assert listed.startswith(f"{added['client_id']}\tname=Batch\ttype=confidential\t")
        assert added["client_secret"] not in listed
        removed = node.cli("clients", "remove", added["client_id"], "--target", node.grpc_target)
        assert removed == f"removed {added['client_id']}; revoked 0 tokens"
        assert asyncio.run(FileClientStore(clients_file).list()) == []
        assert added["client_secret"] not in node.tail(500)
    finally:
        node.stop()
