"""The ``[mfa]`` table: second factors and passkeys (docs/authentication.md)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


@enum.unique
class MfaMode(enum.StrEnum):
    """Who must sign in with a second factor (``mfa.mode``)."""

    OPTIONAL = "optional"  # whoever has one uses it; nobody must enrol
    REQUIRED = "required"  # every user
    ROLES = "roles"  # users holding one of mfa.required_roles


@dataclass(frozen=True)
class MfaSettings:
    """Second factors (docs/authentication.md, 'Second factors and step-up').

    ``mode`` and ``required_roles``: who must have one (a user who must and has none enrols
    right after the password, before any session exists). Factors live beside the users
    (``users.backend``): in ``file`` or the session store's Redis. ``secret_key_file``: a
    file holding 32 bytes (64 hex digits or base64) that seals TOTP secrets at rest
    (AES-256-GCM); empty: secrets are stored unsealed, protected like the user file.
    ``issuer``: the name authenticator apps show. ``fresh_auth_seconds``: how recent the
    latest authentication must be to enrol. ``pending_seconds``: how long a sign-in waits
    for its second step. Passkeys (WebAuthn) are offered when ``rp_id`` is set: the relying
    party id (the site's domain, e.g. ``example.com``), ``rp_name`` (what the authenticator
    shows) and ``origins`` (every origin the pages are served on, e.g.
    ``https://login.example.com``; compared exactly with the browser's clientDataJSON).
    """

    mode: MfaMode = MfaMode.OPTIONAL
    required_roles: tuple[str, ...] = ()
    file: str = "factors.json"
    secret_key_file: str = ""
    issuer: str = "extauthz"
    fresh_auth_seconds: int = 600
    pending_seconds: int = 300
    rp_id: str = ""
    rp_name: str = "extauthz"
    origins: tuple[str, ...] = ()
