"""The admin API's guard (:class:`~extauthz.server.admin.AdminGuard`) and the admin token file
(:func:`~extauthz.server.admin.load_admin_token`): which metadata admits a call, which files
hold a usable token. The served node and the start-up rule: tests/test_advisory.py."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

from extauthz.errors import SettingsError
from extauthz.server.admin import AdminGuard, load_admin_token
from tests.fixtures.core import ADMIN_TOKEN, Aborted, FakeServicerContext


async def _outcome(guard: AdminGuard, *metadata: tuple[str, str]) -> str:
    try:
        await guard.check(FakeServicerContext(metadata))
    except Aborted as refused:
        return refused.code.name
    return "allowed"


@pytest.mark.parametrize(
    ("metadata", "outcome"),
    [
        ((("authorization", f"Bearer {ADMIN_TOKEN}"),), "allowed"),
        ((("authorization", f"bearer {ADMIN_TOKEN}"),), "allowed"),  # RFC 6750 §2.1, any case
        ((("authorization", f"BEARER  {ADMIN_TOKEN} "),), "allowed"),
        ((), "UNAUTHENTICATED"),
        ((("authorization", ""),), "UNAUTHENTICATED"),
        ((("authorization", "Bearer"),), "UNAUTHENTICATED"),
        ((("authorization", f"Bearer {ADMIN_TOKEN[:-1]}"),), "UNAUTHENTICATED"),
        ((("authorization", f"Bearer {ADMIN_TOKEN}x"),), "UNAUTHENTICATED"),
        ((("authorization", f"Basic {ADMIN_TOKEN}"),), "UNAUTHENTICATED"),
        ((("authorization", f"Bearer {ADMIN_TOKEN.upper()}"),), "UNAUTHENTICATED"),
        ((("authorization", f"Bearer {ADMIN_TOKEN}\u00e9"),), "UNAUTHENTICATED"),
        ((("authorization", f"Bearer {ADMIN_TOKEN}"), ("authorization", "Bearer x")),
         "UNAUTHENTICATED"),  # two credentials: which one was meant is not guessed
        ((("x-admin-token", ADMIN_TOKEN),), "UNAUTHENTICATED"),
    ],
)
async def test_only_the_token_as_one_bearer_credential_admits_a_call(
    metadata: tuple[tuple[str, str], ...], outcome: str
) -> None:
    assert await _outcome(AdminGuard(ADMIN_TOKEN), *metadata) == outcome


async def test_binary_metadata_never_admits_a_call() -> None:
    class BinaryContext(FakeServicerContext):
        def invocation_metadata(self) -> tuple[tuple[str, bytes], ...]:  # type: ignore[override]
            return (("authorization", f"Bearer {ADMIN_TOKEN}".encode()),)

    with pytest.raises(Aborted) as refused:
        await AdminGuard(ADMIN_TOKEN).check(BinaryContext())
    assert refused.value.code is grpc.StatusCode.UNAUTHENTICATED


async def test_a_disabled_guard_refuses_even_a_call_with_a_token() -> None:
    header = ("authorization", f"Bearer {ADMIN_TOKEN}")
    assert await _outcome(AdminGuard(None), header) == "PERMISSION_DENIED"


def _token_file(tmp_path: Path, content: bytes, mode: int = 0o600) -> str:
    path = tmp_path / "admin-token"
    path.write_bytes(content)
    path.chmod(mode)
    return str(path)


def test_a_token_file_gives_its_token_stripped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="extauthz"):
        assert load_admin_token(_token_file(tmp_path, f"  {ADMIN_TOKEN}\n".encode())) == ADMIN_TOKEN
    assert caplog.records == []


@pytest.mark.parametrize(
    "content",
    [b"", b"\n", b"0123456789abcde", b"0123456789 abcdef0123", "0123456789abcdef\u00e9".encode(),
     b"0123456789abcdef\x00", b"\xff" * 32],
)  # fmt: skip
def test_a_token_file_without_a_usable_token_is_a_start_up_error(
    tmp_path: Path, content: bytes
) -> None:
    with pytest.raises(SettingsError, match=r"^admin\.token_file: .*at least 16 visible ASCII"):
        load_admin_token(_token_file(tmp_path, content))


def test_an_unreadable_token_file_is_a_start_up_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^admin\.token_file: .*missing: No such file"):
        load_admin_token(str(tmp_path / "missing"))


def test_a_token_file_every_user_may_read_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _token_file(tmp_path, ADMIN_TOKEN.encode(), mode=0o644)
    with caplog.at_level(logging.WARNING, logger="extauthz"):
        assert load_admin_token(path) == ADMIN_TOKEN
    (record,) = caplog.records
    message = record.getMessage()
    assert "readable by every user" in message and ADMIN_TOKEN not in message


def test_session_data_numbers_keep_their_json_kind() -> None:
    """``google.protobuf.Struct`` holds every number as a double: ``{"n": 1}`` came out of
    the admin API as ``1.0`` in the session and the JWT. Whole numbers that a double holds
    exactly become ints again, everywhere in the document; other numbers stay floats."""
    from google.protobuf import json_format
    from google.protobuf.struct_pb2 import Struct

    from extauthz.server.admin import whole_numbers

    data = Struct()
    data.update({"n": 1, "half": 0.5, "big": 2.0**60, "deep": {"list": [2, -3, 1.25]}})
    decoded = json_format.MessageToDict(data)
    assert decoded["n"] == 1.0 and isinstance(decoded["n"], float)  # what the wire gives
    plain = whole_numbers(decoded)
    assert plain == {"n": 1, "half": 0.5, "big": 2.0**60, "deep": {"list": [2, -3, 1.25]}}
    assert type(plain["n"]) is int and type(plain["half"]) is float
    assert type(plain["big"]) is float  # beyond 2**53 a double is no exact integer
    assert [type(v) for v in plain["deep"]["list"]] == [int, int, float]
