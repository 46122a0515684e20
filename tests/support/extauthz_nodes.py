"""extauthz nodes for the store-strategy tests: a settings file per node, in-process
components, and a small synchronous ``Check`` client that classifies answers.

A Check answer is one of ``"allow"``, ``"deny:<reason>"`` (a ``DeniedHttpResponse``; the
reason from the dynamic metadata), ``"unavailable"`` (gRPC ``UNAVAILABLE``: Envoy answers
503) or ``"error:<code>"`` for anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from extauthz.keys.keyring import generate_key
from extauthz.settings import Settings, load_settings
from tests.fixtures.core import bearer_request
from tests.support.redis_topology import ReplicatedTopology

TEST_TABLES: dict[str, dict[str, Any]] = {
    "session": {"cookie_secure": False},
    "jwt": {"issuer": "http://127.0.0.1", "audience": "strategy-tests"},
    # failed lookups would otherwise be throttled per address: the tests count denials
    "ratelimit": {"enabled": False},
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def write_settings(path: Path, tables: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write ``tables`` (merged over :data:`TEST_TABLES`) as a TOML settings file."""
    merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in TEST_TABLES.items()}
    for name, table in tables.items():
        merged.setdefault(name, {}).update(table)
    lines: list[str] = []
    for name, table in merged.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


def keys_dir(base: Path) -> Path:
    """A directory with one fresh ES256 signing key."""
    directory = base / "keys"
    if not directory.exists() or not any(directory.iterdir()):
        directory.mkdir(parents=True, exist_ok=True)
        generate_key(directory)
    return directory


def node_settings(
    base: Path, node_id: str, store: Mapping[str, Any], **tables: Mapping[str, Any]
) -> Settings:
    """Settings of one in-process node (loaded through the same loader as ``serve``)."""
    all_tables: dict[str, Mapping[str, Any]] = {
        "server": {"node_id": node_id},
        "store": store,
        "jwt": {"keys_dir": str(keys_dir(base)), **TEST_TABLES["jwt"]},
        **tables,
    }
    path = write_settings(base / f"{node_id}.toml", all_tables)
    return load_settings(path, environ={})


def classify(response: external_auth_pb2.CheckResponse) -> str:
    fields = response.dynamic_metadata.fields
    if response.HasField("ok_response"):
        return "allow"
    reason = fields["reason"].string_value if "reason" in fields else "?"
    return f"deny:{reason}"


class CheckClient:
    """``Authorization/Check`` against ``target`` over a plain (sync) gRPC channel."""

    def __init__(self, target: str, timeout: float = 2.0) -> None:
        self.target = target
        self.timeout = timeout
        self._channel = grpc.insecure_channel(target)
        self._stub = external_auth_pb2_grpc.AuthorizationStub(self._channel)

    def check(self, token: str) -> str:
        try:
            response = self._stub.Check(bearer_request(token), timeout=self.timeout)
        except grpc.RpcError as exc:
            code = exc.code()
            return "unavailable" if code == grpc.StatusCode.UNAVAILABLE else f"error:{code.name}"
        return classify(response)

    def metadata(self, token: str) -> dict[str, str]:
        """The dynamic metadata of one answer (raises on a gRPC error)."""
        response = self._stub.Check(bearer_request(token), timeout=self.timeout)
        return {k: v.string_value for k, v in response.dynamic_metadata.fields.items()}

    def close(self) -> None:
        self._channel.close()


def settle(topo: ReplicatedTopology, timeout_ms: int = 5000) -> None:
    """Wait until every replica acknowledges a write (``WAIT``).

    A replica that has just finished its first sync acknowledges its first ``WAIT`` only at
    its next replication cron, up to a second later (measured: 0.9 s) -- longer than a
    login's ``wait_timeout_ms``. Production sees this once per attached replica; tests start
    right after attaching, so they let it pass first.
    """
    with topo.primary().client(socket_timeout=timeout_ms / 1000 + 1) as client:
        client.set("settle", "1")
        acked = client.execute_command("WAIT", len(topo.replicas), timeout_ms)
        client.delete("settle")
    expected = len(topo.replicas)
    assert int(acked) == expected, f"{acked} of {expected} replicas acknowledged"
