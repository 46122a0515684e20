"""The passkey pages: the user's passkeys (add, remove), the sign-in with a passkey alone and
the passkey form of a sign-in's second step. The WebAuthn ceremony needs script: these pages
load one file from this service (``/auth/static/passkeys.js``) under
:data:`PASSKEY_HTML_HEADERS` (``script-src 'self'``, ``connect-src 'self'``, nothing inline,
nothing third-party); every other page keeps the no-script policy. Every value is escaped."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from extauthz.login.pages import _page, _when, html_headers

SCRIPT_PATH = "/auth/static/passkeys.js"
PASSKEY_HTML_HEADERS: Mapping[str, str] = html_headers(script=True)


def _ceremony(mode: str, options: str, action: str, label: str, *, return_to: str = "",
              name_field: bool = False) -> str:
    """The element the script drives: ``data-mode`` (``register``, ``sign-in``,
    ``second-step``), where to get the options and where to send the answer."""
    e = html.escape
    name = (
        '<label for="passkey-name">Name of this passkey</label>'
        '<input id="passkey-name" name="name" maxlength="64" autocomplete="off">'
        if name_field else ""
    )
    return (
        f'<div id="passkey" data-mode="{e(mode)}" data-options="{e(options)}" '
        f'data-action="{e(action)}" data-return-to="{e(return_to)}">{name}'
        f'<button type="button" id="passkey-button">{e(label)}</button>'
        '<p class="error" id="passkey-error" role="alert" hidden></p></div>'
        f'<script src="{SCRIPT_PATH}"></script>'
    )


def passkeys_page(passkeys: Sequence[Mapping[str, Any]], *, remove_action: str, options: str,
                  action: str, notice: str = "") -> str:
    """The user's passkeys (:func:`~extauthz.login.mfa.passkeys.passkey_summary` entries)
    with a removal form each, and the button that adds one."""
    e = html.escape
    rows = "".join(
        f'<tr data-passkey="{e(p["id"])}"><td>{e(p["name"])}</td><td>{e(" ".join(p["amr"]))}'
        f'</td><td>{e(_when(p["created_at"]))}</td>'
        f'<td>{e(_when(p["last_used_at"])) if p["last_used_at"] else "-"}</td>'
        f'<td><form class="inline" method="post" action="{e(remove_action)}">'
        f'<input type="hidden" name="factor_id" value="{e(p["id"])}">'
        f'<button type="submit" id="remove-{e(p["id"])}">Remove</button></form></td></tr>'
        for p in passkeys
    )
    table = (
        '<table id="passkeys"><tr><th>Name</th><th>Kind</th><th>Added</th><th>Last used</th>'
        f"<th></th></tr>{rows}</table>" if rows else '<p id="passkeys">None.</p>'
    )
    shown = f'<p class="notice" id="notice">{e(notice)}</p>' if notice else ""
    body = (
        f"<h1>Passkeys</h1>{shown}{table}<h2>Add a passkey</h2>"
        + _ceremony("register", options, action, "Add a passkey", name_field=True)
        + '<p><a id="mfa" href="/auth/mfa">Second factors</a></p>'
    )
    return _page("Passkeys", body, wide=True)


def sign_in_page(options: str, action: str, return_to: str) -> str:
    """Sign in with a passkey alone."""
    body = (
        "<h1>Sign in with a passkey</h1>"
        + _ceremony("sign-in", options, action, "Use a passkey", return_to=return_to)
        + '<p><a id="password-login" href="/auth/login">Sign in with a password</a></p>'
    )
    return _page("Sign in with a passkey", body)


def step_up_page(options: str, action: str, return_to: str) -> str:
    """Re-authentication of the current session with a passkey."""
    body = (
        "<h1>Confirm it is you</h1><p>This page needs a recent sign-in.</p>"
        + _ceremony("step-up", options, action, "Use your passkey", return_to=return_to)
    )
    return _page("Confirm it is you", body)


def second_step_page(options: str, action: str) -> str:
    """The second step of a sign-in, answered with a passkey."""
    body = "<h1>Confirm it is you</h1>" + _ceremony(
        "second-step", options, action, "Use your passkey"
    )
    return _page("Confirm it is you", body)
