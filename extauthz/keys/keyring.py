"""Signing keys: loaded from a directory of PEM files, published as a JWKS.

* Supported: EC P-256 (``ES256``, the default), Ed25519 (``EdDSA``), RSA of at least 2048
  bits (``RS256``).
* ``kid`` is the RFC 7638 JWK thumbprint (SHA-256, base64url) of the public key.
* Every loaded key is published (RFC 7517 JWK Set); the newest file (modification time, then
  name) that has been published long enough signs (see :class:`KeyRing`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from extauthz.errors import KeyLoadError

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey

# RFC 7638 §3.2: the required members of each key type, in lexicographic order
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
}


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    private_key: PrivateKey
    public_jwk: dict[str, Any]
    path: str
    mtime: float


def _public_jwk(key: PrivateKey) -> tuple[str, dict[str, Any]]:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise KeyLoadError(f"EC curve {key.curve.name} is not supported (use P-256)")
        return "ES256", ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA", OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise KeyLoadError(f"RSA key of {key.key_size} bits is too small (at least 2048)")
        return "RS256", RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    raise KeyLoadError(f"unsupported key type {type(key).__name__}")


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint: SHA-256 over the required members, sorted, no white space."""
    members = _THUMBPRINT_MEMBERS.get(jwk.get("kty", ""))
    if members is None:
        raise KeyLoadError(f"no thumbprint rule for kty {jwk.get('kty')!r}")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def load_key_file(path: Path) -> SigningKey:
    """:raises KeyLoadError: unreadable, not a PEM private key, or an unsupported key."""
    try:
        data = path.read_bytes()
        key = serialization.load_pem_private_key(data, password=None)
    except OSError as exc:
        raise KeyLoadError(f"{path}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise KeyLoadError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, PrivateKey):
        raise KeyLoadError(f"{path}: unsupported key type {type(key).__name__}")
    try:
        algorithm, jwk = _public_jwk(key)
    except KeyLoadError as exc:
        raise KeyLoadError(f"{path}: {exc}") from None
    kid = jwk_thumbprint(jwk)
    jwk.update({"kid": kid, "alg": algorithm, "use": "sig"})
    return SigningKey(kid, algorithm, key, jwk, str(path), path.stat().st_mtime)


class KeyRing:
    """The loaded keys: every one published; the newest *ready* one signs.

    Rotation follows "publish first, sign later": a key is published in the JWKS as soon as
    it is loaded, but signs only once it has been published for ``publish_before_sign``
    seconds, so upstreams that cache the JWKS (``max-age``) know it before they see a JWT it
    signed. A key found by :meth:`reload` counts from the moment this node published it
    (whatever its file's modification time: ``cp -p`` or ``rsync -a`` keep old times); a key
    present at start-up counts from its file's modification time, since an earlier process
    may have published it. When no key is ready (a first deployment), the oldest key signs.
    Old keys stay published for as long as their files stay in the directory: remove one no
    sooner than ``jwt.lifetime_seconds`` after a newer key started signing.
    """

    def __init__(
        self,
        keys: list[SigningKey],
        *,
        directory: str | Path | None = None,
        publish_before_sign: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not keys:
            raise KeyLoadError("no signing keys loaded")
        self._directory = Path(directory) if directory is not None else None
        self._publish_before_sign = publish_before_sign
        self._clock = clock
        self._keys = sorted(keys, key=lambda k: (k.mtime, k.path))
        # when each key was first published: its file time for the keys found at start-up
        self._published: dict[str, float] = {k.kid: k.mtime for k in self._keys}
        self._signing = self._choose()
        self.skipped: list[str] = []  # files the last reload could not load, with the reason

    @classmethod
    def from_directory(
        cls,
        directory: str | Path,
        *,
        publish_before_sign: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> KeyRing:
        """Load every ``*.pem`` in ``directory``.

        :raises KeyLoadError: the directory is missing or empty, or a file is bad.
        """
        return cls(
            _load_directory(Path(directory)),
            directory=directory,
            publish_before_sign=publish_before_sign,
            clock=clock,
        )

    def _choose(self) -> SigningKey:
        ready_before = self._clock() - self._publish_before_sign
        ready = [k for k in self._keys if self._published[k.kid] <= ready_before]
        return ready[-1] if ready else self._keys[0]

    def reload(self) -> bool:
        """Re-read the directory (new keys published, removed ones dropped) and re-choose the
        signing key as time has passed. Returns whether anything changed.

        A file that cannot be loaded (half copied, not a key) is skipped and named in
        :attr:`skipped`; the rest still applies, so deleting a compromised key takes effect
        even while another file is bad.

        :raises KeyLoadError: no usable key is left in the directory (it is gone, empty, or
            every file is bad); the ring is left as it was.
        """
        self.skipped = []
        if self._directory is not None:
            files = _key_files(self._directory)
            keys = []
            for path in files:
                try:
                    keys.append(load_key_file(path))
                except KeyLoadError as exc:
                    self.skipped.append(str(exc))
            if not keys:
                reasons = "; ".join(self.skipped)
                raise KeyLoadError(f"jwt.keys_dir: no usable key in {self._directory}: {reasons}")
            keys.sort(key=lambda k: (k.mtime, k.path))
        else:
            keys = self._keys
        signing = self._signing
        changed = [k.kid for k in keys] != self.kids
        now = self._clock()
        self._published = {k.kid: self._published.get(k.kid, now) for k in keys}
        self._keys = keys
        self._signing = self._choose()
        return changed or self._signing.kid != signing.kid

    @property
    def signing_key(self) -> SigningKey:
        return self._signing

    @property
    def kids(self) -> list[str]:
        return [k.kid for k in self._keys]

    def jwks(self) -> dict[str, Any]:
        """The RFC 7517 §5 JWK Set of every loaded public key."""
        return {"keys": [dict(k.public_jwk) for k in self._keys]}


def _key_files(root: Path) -> list[Path]:
    """The ``*.pem`` files of ``root``, sorted.

    :raises KeyLoadError: ``root`` is not a directory or holds no ``*.pem`` file.
    """
    if not root.is_dir():
        raise KeyLoadError(
            f"jwt.keys_dir: {root} is not a directory (create a key with "
            f"'extauthz keys generate --dir {root}')"
        )
    files = sorted(p for p in root.iterdir() if p.suffix == ".pem" and p.is_file())
    if not files:
        raise KeyLoadError(
            f"jwt.keys_dir: no *.pem keys in {root} "
            f"(create one with 'extauthz keys generate --dir {root}')"
        )
    return files


def _load_directory(root: Path) -> list[SigningKey]:
    return [load_key_file(p) for p in _key_files(root)]


def generate_key(directory: str | Path, algorithm: str = "ES256") -> Path:
    """Write a new private key as ``<kid>.pem`` (mode 0600) into ``directory``; return the path.

    :raises ValueError: unknown algorithm.
    """
    key: PrivateKey
    if algorithm == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "EdDSA":
        key = ed25519.Ed25519PrivateKey.generate()
    elif algorithm == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    else:
        raise ValueError(f"unknown algorithm {algorithm!r} (ES256, EdDSA or RS256)")
    _, jwk = _public_jwk(key)
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{jwk_thumbprint(jwk)}.pem"
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return path
