"""Validation of the passkey settings (``mfa.rp_id``, ``mfa.rp_name``, ``mfa.origins``):
WebAuthn §5.1.3 (the relying party id is a domain) and §13.4.9 (origins checked exactly)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from extauthz.errors import SettingsError
from extauthz.settings import mfa

_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_RP_ID = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*")


def validate_passkeys(m: mfa.MfaSettings) -> None:
    """``rp_id`` a lower-case domain (WebAuthn §5.1.3: never an IP address); each origin
    ``https://host[:port]`` (``http://`` only for ``localhost``) whose host is ``rp_id`` or
    below it."""
    if not m.rp_id:
        if m.origins:
            raise SettingsError("mfa.origins: set mfa.rp_id too (passkeys are off without it)")
        return
    if not _RP_ID.fullmatch(m.rp_id) or m.rp_id.replace(".", "").isdigit():
        raise SettingsError("mfa.rp_id: expected a lower-case domain name, not an address")
    if not m.rp_name or len(m.rp_name) > 64:
        raise SettingsError("mfa.rp_name: expected 1-64 characters")
    if not m.origins:
        raise SettingsError("mfa.origins: name the origin(s) the login pages are served on")
    for origin in m.origins:
        parts = urlsplit(origin)
        host = parts.hostname or ""
        secure = parts.scheme == "https" or (parts.scheme == "http" and host == "localhost")
        try:
            port_ok = parts.port is None or parts.port > 0
        except ValueError:
            port_ok = False
        if (not secure or not port_ok or origin != f"{parts.scheme}://{parts.netloc}"
                or not (host == m.rp_id or host.endswith("." + m.rp_id))):
            raise SettingsError(
                f"mfa.origins: {origin!r} is not https://<{m.rp_id} or a subdomain>[:port]"
            )
