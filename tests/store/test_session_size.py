"""The JWT size bound: a session whose JWT would exceed ``jwt.max_bytes``
is refused when it is created, by every path that creates one (the manager as the composition
root wires it, the admin API, the login service), and nothing is stored."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from extauthz._proto.extauthz.v1 import admin_pb2
from extauthz.check.context import RequestContext
from extauthz.check.minting import JwtTooLarge
from extauthz.errors import Forbidden, Reason, SettingsError
from extauthz.login.service import LoginForm
from extauthz.login.users import FileUserStore
from extauthz.server.admin import AdminGuard, SessionAdminServicer
from extauthz.server.app import Components, build_components
from tests.fixtures.core import ADMIN_METADATA, ADMIN_TOKEN
from tests.support.extauthz_nodes import TEST_TABLES, keys_dir, node_settings

# 300 roles of ordinary length: a 5-10 KB JWT without the bound (the 431)
MANY_ROLES = [f"team-{i:03d}-reader" for i in range(300)]


class _Aborted(Exception):
    pass


class _Context:
    code: grpc.StatusCode | None = None
    details = ""

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        self.code, self.details = code, details
        raise _Aborted

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ADMIN_METADATA


def _components(tmp_path: Path, **jwt: object) -> Components:
    settings = node_settings(
        tmp_path, "n1", {"strategy": "sticky", "backend": "memory"},
        users={"file": str(tmp_path / "users.json")},
        jwt={"keys_dir": str(keys_dir(tmp_path)), **TEST_TABLES["jwt"], **jwt},
    )  # fmt: skip
    return build_components(settings)


async def test_a_session_whose_jwt_exceeds_the_bound_is_refused_and_not_stored(
    tmp_path: Path,
) -> None:
    components = _components(tmp_path)
    assert components.minter.max_bytes == 4096  # the default, well under 8 KiB
    with pytest.raises(JwtTooLarge, match=r"over jwt.max_bytes \(4096\)"):
        await components.sessions.create("alice", roles=MANY_ROLES)
    assert await components.store.list_subject("alice") == []
    # the same session under a bound that holds it
    roomy = _components(tmp_path / "roomy", max_bytes=65536)
    _, session = await roomy.sessions.create("alice", roles=MANY_ROLES)
    assert len(roomy.minter.mint(session)) <= 65536


async def test_the_admin_api_answers_invalid_argument(tmp_path: Path) -> None:
    components = _components(tmp_path)
    admin = SessionAdminServicer(components.sessions, AdminGuard(ADMIN_TOKEN))
    context = _Context()
    with pytest.raises(_Aborted):
        await admin.CreateSession(
            admin_pb2.CreateSessionRequest(sub="alice", roles=MANY_ROLES), context
        )
    assert context.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "jwt.max_bytes" in context.details


async def test_a_login_whose_session_would_be_too_large_is_a_clear_403(tmp_path: Path) -> None:
    components = _components(tmp_path)
    password_hash = await components.verifier.hash_password_async("correct horse")
    await FileUserStore(tmp_path / "users.json").put("alice", password_hash, MANY_ROLES, [])
    ctx = RequestContext(
        method="POST", scheme="http", host="127.0.0.1", path="/auth/login",
        headers={"origin": "http://127.0.0.1"}, peer_address="127.0.0.1",
    )  # fmt: skip

    async def read() -> LoginForm:
        return LoginForm("alice", "correct horse", "")

    with pytest.raises(Forbidden) as refused:
        await components.auth.service.login(ctx, read)
    assert refused.value.reason is Reason.SESSION_TOO_LARGE
    assert "jwt.max_bytes" in refused.value.detail
    assert await components.store.list_subject("alice") == []


def test_the_bound_is_validated(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="jwt.max_bytes"):
        _components(tmp_path, max_bytes=100)
