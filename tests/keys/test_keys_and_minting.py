"""Signing keys (RFC 7638 kid, JWKS) and JWT minting with its per-session cache."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from extauthz.check.minting import JwtMinter, JwtTooLarge
from extauthz.clock import JWT_BACKDATE_SECONDS, MAX_CLOCK_OFFSET_SECONDS
from extauthz.errors import KeyLoadError
from extauthz.keys.keyring import KeyRing, generate_key, jwk_thumbprint, load_key_file
from extauthz.store.model import Session
from tests.fixtures.core import AUDIENCE, ISSUER, FakeClock, verify_jwt


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def write_pem(path: Path, key: object) -> Path:
    path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


# -- keys ------------------------------------------------------------------------------------


def test_rfc7638_example_thumbprint() -> None:
    # RFC 7638 §3.1
    jwk = {
        "kty": "RSA",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
            "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Qvzq"
            "Y368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0"
            "fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_ec_kid_is_the_thumbprint_of_the_public_key(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.public_key().public_numbers()
    canonical = json.dumps(
        {
            "crv": "P-256",
            "kty": "EC",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
        },
        separators=(",", ":"),
        sort_keys=True,
    )
    expected = b64url(hashlib.sha256(canonical.encode()).digest())
    loaded = load_key_file(write_pem(tmp_path / "k.pem", key))
    assert loaded.kid == expected
    assert loaded.algorithm == "ES256"
    assert loaded.public_jwk["kid"] == expected
    assert loaded.public_jwk["alg"] == "ES256" and loaded.public_jwk["use"] == "sig"
    assert "d" not in loaded.public_jwk


def test_eddsa_and_rsa_keys_load(tmp_path: Path) -> None:
    ed = load_key_file(write_pem(tmp_path / "ed.pem", ed25519.Ed25519PrivateKey.generate()))
    assert ed.algorithm == "EdDSA" and ed.public_jwk["crv"] == "Ed25519"
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rs = load_key_file(write_pem(tmp_path / "rs.pem", rsa_key))
    assert rs.algorithm == "RS256" and "d" not in rs.public_jwk and "p" not in rs.public_jwk


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ec.generate_private_key(ec.SECP384R1()), "P-256"),
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024), "too small"),
    ],
)
def test_unsupported_keys_are_refused(tmp_path: Path, make: object, message: str) -> None:
    path = write_pem(tmp_path / "bad.pem", make())  # type: ignore[operator]
    with pytest.raises(KeyLoadError, match=message):
        load_key_file(path)


def test_a_file_that_is_not_a_pem_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.pem"
    path.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyLoadError, match="junk.pem"):
        KeyRing.from_directory(tmp_path)


def test_missing_or_empty_directory_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError, match=r"^jwt\.keys_dir: .* is not a directory"):
        KeyRing.from_directory(tmp_path / "absent")
    (tmp_path / "notes.txt").write_text("not a key")
    with pytest.raises(KeyLoadError, match=r"^jwt\.keys_dir: no \*\.pem keys"):
        KeyRing.from_directory(tmp_path)


def test_generate_key_writes_a_private_file_named_by_kid(tmp_path: Path) -> None:
    path = generate_key(tmp_path / "keys")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.name == load_key_file(path).kid + ".pem"
    with pytest.raises(ValueError, match="unknown algorithm"):
        generate_key(tmp_path / "keys", "HS256")


def test_every_key_is_published_and_the_newest_signs(tmp_path: Path) -> None:
    old = generate_key(tmp_path)
    new = generate_key(tmp_path, "EdDSA")
    os.utime(old, (1_000_000, 1_000_000))
    os.utime(new, (2_000_000, 2_000_000))
    ring = KeyRing.from_directory(tmp_path)
    assert ring.signing_key.path == str(new)
    assert ring.kids == [load_key_file(old).kid, load_key_file(new).kid]
    assert [k["kid"] for k in ring.jwks()["keys"]] == ring.kids
    # rotation the other way round: the newest file signs, whatever its name
    os.utime(old, (3_000_000, 3_000_000))
    assert KeyRing.from_directory(tmp_path).signing_key.path == str(old)


# -- minting ---------------------------------------------------------------------------------------


def session(clock: FakeClock, **changes: object) -> Session:
    values: dict[str, object] = {
        "sid": "sid-1",
        "sub": "alice",
        "created_at": clock() - 10,
        "last_seen": clock(),
        "idle_timeout": 600,
        "expires_at": clock() + 3600,
        "scopes": ("read", "write"),
        "roles": ("admin",),
        "data": {"tenant": "t1"},
    }
    values.update(changes)
    return Session(**values)  # type: ignore[arg-type]


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    generate_key(tmp_path)
    return KeyRing.from_directory(tmp_path)


def minter(ring: KeyRing, clock: FakeClock, lifetime: int = 300) -> JwtMinter:
    return JwtMinter(ring, issuer=ISSUER, audience=AUDIENCE, lifetime_seconds=lifetime, clock=clock)


def test_minted_jwt_carries_the_session_and_verifies_against_the_jwks(ring: KeyRing) -> None:
    clock = FakeClock()
    s = session(clock)
    token = minter(ring, clock).mint(s)
    header = jwt.get_unverified_header(token)
    assert header["kid"] == ring.signing_key.kid and header["alg"] == "ES256"
    claims = verify_jwt(ring, token)
    assert claims["iss"] == ISSUER and claims["aud"] == AUDIENCE
    assert (claims["sub"], claims["sid"]) == ("alice", "sid-1")
    assert claims["iat"] == claims["nbf"] == int(clock()) - JWT_BACKDATE_SECONDS
    assert claims["exp"] == int(clock()) + 300
    assert claims["auth_time"] == int(s.created_at)
    assert claims["scope"] == "read write" and claims["roles"] == ["admin"]
    assert claims["data"] == {"tenant": "t1"}
    assert len(claims["jti"]) >= 16
    assert claims["auth_method"] == "session" and "client_id" not in claims


def test_an_application_token_names_its_client_in_the_jwt(ring: KeyRing) -> None:
    clock = FakeClock()
    s = replace(session(clock), kind="oauth", client_id="app-1")
    claims = verify_jwt(ring, minter(ring, clock).mint(s))
    assert (claims["auth_method"], claims["client_id"]) == ("oauth", "app-1")


def test_jwt_auth_time_is_the_latest_authentication_and_amr_is_a_list(ring: KeyRing) -> None:
    clock = FakeClock()
    s = session(clock)
    m = minter(ring, clock)
    assert "amr" not in verify_jwt(ring, m.mint(s))
    stepped = replace(
        s, amr=("pwd", "otp", "mfa"), auth_time=s.created_at + 120, version=s.version + 1
    )
    claims = verify_jwt(ring, m.mint(stepped))  # the cached JWT of the older record is not it
    assert claims["auth_time"] == int(s.created_at) + 120
    assert claims["amr"] == ["pwd", "otp", "mfa"]


def test_jwt_does_not_verify_for_another_audience_or_algorithm(ring: KeyRing) -> None:
    clock = FakeClock()
    token = minter(ring, clock).mint(session(clock))
    key = jwt.PyJWKSet.from_dict(ring.jwks()).keys[0].key
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, key=key, algorithms=["ES256"], audience="other", issuer=ISSUER)
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(token, key=key, algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER)


def test_jwt_never_outlives_the_session(ring: KeyRing) -> None:
    clock = FakeClock()
    token = minter(ring, clock).mint(session(clock, expires_at=clock() + 42))
    assert verify_jwt(ring, token)["exp"] == int(clock()) + 42


def test_cached_jwt_is_reused_while_fresh_and_reminted_when_little_is_left(ring: KeyRing) -> None:
    clock = FakeClock()
    m = minter(ring, clock, lifetime=300)  # reused while >= 150 s are left
    s = session(clock)
    first = m.mint(s)
    clock.advance(150)
    assert m.mint(s) == first
    clock.advance(1)
    second = m.mint(s)
    assert second != first
    claims = verify_jwt(ring, second, leeway=200)
    assert claims["iat"] == int(clock()) - JWT_BACKDATE_SECONDS
    assert claims["exp"] == int(clock()) + 300
    assert claims["jti"] != verify_jwt(ring, first, verify_exp=False)["jti"]


def test_changed_claims_or_forget_mint_anew(ring: KeyRing) -> None:
    clock = FakeClock()
    m = minter(ring, clock)
    s = session(clock)
    first = m.mint(s)
    assert m.mint(session(clock, last_seen=clock() + 1, version=2)) == first  # only sliding
    changed = m.mint(session(clock, scopes=("read",)))
    assert changed != first and verify_jwt(ring, changed)["scope"] == "read"
    m.forget("sid-1")
    assert m.mint(session(clock, scopes=("read",))) != changed


def test_cache_is_per_session(ring: KeyRing) -> None:
    clock = FakeClock()
    m = minter(ring, clock)
    a = m.mint(session(clock))
    b = m.mint(session(clock, sid="sid-2", sub="bob"))
    assert verify_jwt(ring, b)["sub"] == "bob" and a != b
    assert m.mint(session(clock)) == a


def test_cache_is_bounded(ring: KeyRing) -> None:
    clock = FakeClock()
    m = JwtMinter(ring, issuer=ISSUER, audience=AUDIENCE, clock=clock, max_cached=2)
    first = m.mint(session(clock, sid="s1"))
    m.mint(session(clock, sid="s2"))
    m.mint(session(clock, sid="s3"))
    assert m.mint(session(clock, sid="s1")) != first


# -- rotation: publish first, sign later ----------------------------------------------------------


def _aged(path: Path, seconds_ago: float, now: float) -> Path:
    os.utime(path, (now - seconds_ago, now - seconds_ago))
    return path


def test_a_new_key_is_published_before_it_signs(tmp_path: Path) -> None:
    """A JWKS-caching upstream must know a key before it sees a JWT signed by it."""
    clock = FakeClock(1_800_000_000.0)
    old = _aged(generate_key(tmp_path), 3600, clock.now)
    ring = KeyRing.from_directory(tmp_path, publish_before_sign=300, clock=clock)
    old_kid = load_key_file(old).kid
    assert ring.signing_key.kid == old_kid

    new = _aged(generate_key(tmp_path), 10, clock.now)
    new_kid = load_key_file(new).kid
    assert ring.reload() is True
    assert set(ring.kids) == {old_kid, new_kid}  # published at once ...
    assert ring.signing_key.kid == old_kid  # ... but not signing yet
    jwks_kids = {k["kid"] for k in ring.jwks()["keys"]}
    assert new_kid in jwks_kids

    clock.advance(291)  # the file is 301 s old, but this node published it 291 s ago
    assert ring.reload() is False
    assert ring.signing_key.kid == old_kid
    clock.advance(10)  # published 301 s ago
    assert ring.reload() is True
    assert ring.signing_key.kid == new_kid
    assert ring.reload() is False  # nothing changed since

    old.unlink()  # retired by the operator once its last JWT expired
    assert ring.reload() is True
    assert ring.kids == [new_kid]


def test_a_key_copied_in_with_an_old_file_time_still_waits(tmp_path: Path) -> None:
    """`cp -p`, `rsync -a` or tar keep a file's old modification time: a key added while
    running counts from when this node published it, not from its file time."""
    clock = FakeClock(1_800_000_000.0)
    old_kid = load_key_file(_aged(generate_key(tmp_path), 7200, clock.now)).kid
    ring = KeyRing.from_directory(tmp_path, publish_before_sign=300, clock=clock)
    copied = _aged(generate_key(tmp_path), 3600, clock.now)  # newer than old, but "old"
    ring.reload()
    assert load_key_file(copied).kid in ring.kids
    assert ring.signing_key.kid == old_kid
    clock.advance(300)
    ring.reload()
    assert ring.signing_key.kid == load_key_file(copied).kid


def test_a_first_key_signs_at_once(tmp_path: Path) -> None:
    clock = FakeClock(1_800_000_000.0)
    only = _aged(generate_key(tmp_path), 1, clock.now)
    ring = KeyRing.from_directory(tmp_path, publish_before_sign=300, clock=clock)
    assert ring.signing_key.kid == load_key_file(only).kid


def test_a_reload_with_no_usable_key_keeps_the_keys_in_use(tmp_path: Path) -> None:
    key = generate_key(tmp_path)
    ring = KeyRing.from_directory(tmp_path)
    key.rename(tmp_path / "old.pem.bak")
    (tmp_path / "broken.pem").write_text("not a key")
    with pytest.raises(KeyLoadError, match="broken.pem"):
        ring.reload()
    (tmp_path / "broken.pem").unlink()
    with pytest.raises(KeyLoadError, match="no \\*.pem keys"):
        ring.reload()  # an empty directory: nothing could sign
    assert ring.kids == [load_key_file(tmp_path / "old.pem.bak").kid]
    assert ring.signing_key.kid == load_key_file(tmp_path / "old.pem.bak").kid


def test_a_removed_key_goes_even_while_another_file_is_bad(tmp_path: Path) -> None:
    """Emergency removal (docs/operations.md): the compromised key's file is deleted while a
    new key is still being copied in (half a file). The removal applies at once; the bad file
    is skipped and named, and is taken up by a later reload once it is whole."""
    compromised = generate_key(tmp_path)
    spare = generate_key(tmp_path)
    ring = KeyRing.from_directory(tmp_path)
    new = generate_key(tmp_path / "staging")
    (tmp_path / new.name).write_bytes(new.read_bytes()[:40])  # a copy under way
    compromised.unlink()
    assert ring.reload()
    assert ring.kids == [load_key_file(spare).kid]
    assert ring.signing_key.kid == load_key_file(spare).kid
    assert len(ring.skipped) == 1 and new.name in ring.skipped[0]
    (tmp_path / new.name).write_bytes(new.read_bytes())
    assert ring.reload()
    assert set(ring.kids) == {load_key_file(spare).kid, load_key_file(new).kid}
    assert ring.skipped == []


async def test_the_reload_task_publishes_a_new_key_while_serving(tmp_path: Path) -> None:
    """extauthz.server.tasks.KeyReloader: a key dropped into keys_dir is published without a
    restart, and a broken file does not stop the task or lose the keys in use."""
    import asyncio

    from extauthz.server.tasks import KeyReloader

    first_path = generate_key(tmp_path)
    os.utime(first_path, (first_path.stat().st_mtime - 10,) * 2)
    first = load_key_file(first_path).kid
    ring = KeyRing.from_directory(tmp_path, publish_before_sign=300)
    reloader = KeyReloader(ring, 0.05)
    await reloader.start()
    try:
        second = load_key_file(generate_key(tmp_path)).kid
        for _ in range(100):
            if second in ring.kids:
                break
            await asyncio.sleep(0.02)
        assert set(ring.kids) == {first, second}
        assert ring.signing_key.kid == first  # published, not yet signing
        (tmp_path / "broken.pem").write_text("junk")
        await asyncio.sleep(0.2)
        assert reloader.running
        assert set(ring.kids) == {first, second}
    finally:
        await reloader.stop()


# -- the clock contract and the size bound -----------------------------------------


@pytest.mark.parametrize("ahead", [2.0, 2 * MAX_CLOCK_OFFSET_SECONDS])
def test_a_verifier_with_no_leeway_accepts_a_jwt_from_a_node_whose_clock_is_ahead(
    ring: KeyRing, ahead: float
) -> None:
    """A node within the contract (here up to twice the bound: node and verifier each at the
    edge, on opposite sides of the store's clock) mints a JWT that PyJWT's defaults accept
    (no leeway: ``iat`` and ``nbf`` must not lie in the verifier's future)."""
    verifier_clock = FakeClock()
    node_clock = FakeClock(verifier_clock() + ahead)
    token = minter(ring, node_clock).mint(session(node_clock))
    claims = verify_jwt(ring, token, leeway=0)  # would raise ImmatureSignatureError
    assert claims["nbf"] <= verifier_clock() and claims["iat"] <= verifier_clock()
    assert claims["exp"] == int(node_clock()) + 300  # the lifetime is not stretched by exp


def test_the_jwt_size_bound_refuses_a_session_whose_jwt_would_not_fit(ring: KeyRing) -> None:
    clock = FakeClock()
    bounded = JwtMinter(ring, issuer=ISSUER, audience=AUDIENCE, clock=clock, max_bytes=4096)
    small = session(clock)
    bounded.check_size(small)  # fits
    assert bounded.size(small) == len(bounded.mint(small))
    roles = tuple(f"role-{i:03d}-with-a-long-name" for i in range(300))
    big = Session(sid="sid-2", sub="alice", created_at=clock(), last_seen=clock(),
                  idle_timeout=600, expires_at=clock() + 3600, roles=roles)  # fmt: skip
    assert bounded.size(big) > 4096
    with pytest.raises(JwtTooLarge, match=r"jwt.max_bytes \(4096\).*roles \(300\)"):
        bounded.check_size(big)


# -- fixed-width EC encodings ----------------------------------------------


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key_whose_coordinate_starts_with_zero(coordinate: str) -> ec.EllipticCurvePrivateKey:
    """The P-256 key with the smallest private scalar whose public ``x`` or ``y`` has a
    leading zero byte (about one scalar in 256)."""
    for scalar in range(1, 20_000):
        key = ec.derive_private_key(scalar, ec.SECP256R1())
        value = getattr(key.public_key().public_numbers(), coordinate)
        if value < 1 << 248:
            return key
    raise AssertionError(f"no key with a short {coordinate} in 20000 scalars")


@pytest.mark.parametrize("coordinate", ["x", "y"])
def test_a_coordinate_with_a_leading_zero_byte_is_published_in_full(
    tmp_path: Path, coordinate: str
) -> None:
    """RFC 7518 §6.2.1.2/§6.2.1.3: ``x`` and ``y`` are the full 32 bytes, leading zeros
    included; a shortened one changes the kid (RFC 7638) and fails strict verifiers."""
    key = _key_whose_coordinate_starts_with_zero(coordinate)
    write_pem(tmp_path / "k.pem", key)
    ring = KeyRing.from_directory(tmp_path)
    (jwk,) = ring.jwks()["keys"]
    numbers = key.public_key().public_numbers()
    for name in ("x", "y"):
        raw = _b64url_decode(jwk[name])
        assert len(raw) == 32 and int.from_bytes(raw, "big") == getattr(numbers, name)
    assert _b64url_decode(jwk[coordinate])[0] == 0
    canonical = json.dumps(
        {"crv": "P-256", "kty": "EC", "x": jwk["x"], "y": jwk["y"]}, separators=(",", ":")
    )
    assert jwk["kid"] == b64url(hashlib.sha256(canonical.encode()).digest())
    clock = FakeClock()
    assert verify_jwt(ring, minter(ring, clock).mint(session(clock)))["sub"] == "alice"


def test_es256_signatures_with_a_leading_zero_byte_in_r_or_s_verify(ring: KeyRing) -> None:
    """RFC 7518 §3.4: an ES256 signature is R and S as 32 bytes each (64 in all), never
    DER and never shortened when R or S is below 2^248. Mint until both cases occurred
    (about one signature in 128) and check each with the JWKS and with cryptography."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    clock = FakeClock()
    mint = minter(ring, clock)
    public = ring.signing_key.private_key.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    seen: set[str] = set()
    for n in range(20_000):
        token = mint.mint(session(clock, sid=f"sid-{n}"))
        signing_input, _, signature_text = token.rpartition(".")
        signature = _b64url_decode(signature_text)
        assert len(signature) == 64
        short = {part for part, half in (("r", signature[:32]), ("s", signature[32:]))
                 if half[0] == 0}  # fmt: skip
        if not short - seen:
            continue
        seen |= short
        assert verify_jwt(ring, token)["sid"] == f"sid-{n}"
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        public.verify(encode_dss_signature(r, s), signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        if seen == {"r", "s"}:
            return
    raise AssertionError(f"only {seen} with a leading zero byte in 20000 signatures")
