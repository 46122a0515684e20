"""The second-factor pages: the code form of a sign-in, enrolment (the QR code as inline SVG
and the secret in text), the recovery codes shown once, step-up, and the overview. Plain forms
under the same Content-Security-Policy as the login (:data:`extauthz.login.pages.HTML_HEADERS`:
no script at all); every value is escaped; the QR code is SVG drawn by the server (segno)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from extauthz.login.mfa.steps import VERIFY_PATH, EnrolmentView
from extauthz.login.pages import _page, _when

_LABELS = {
    "totp": ("Code from your authenticator app", "one-time-code", "numeric"),
    "recovery": ("Recovery code", "off", "text"),
    "password": ("Password", "current-password", "text"),
}


def _error(error: str) -> str:
    return f'<p class="error" id="error" role="alert">{html.escape(error)}</p>' if error else ""


def answer_form(action: str, kind: str, hidden: Mapping[str, str] | None = None) -> str:
    """A form posting ``kind`` and ``response`` (plus ``hidden`` fields) to ``action``; the
    input's id is ``<kind>-response``, the button's ``<kind>-submit``."""
    e = html.escape
    if kind == "webauthn":  # the ceremony runs on a passkey page of its own (script)
        return _passkey_link(action, (hidden or {}).get("return_to", ""))
    label, autocomplete, mode = _LABELS.get(kind, (kind, "off", "text"))
    fields = "".join(
        f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in (hidden or {}).items()
    )
    kind_type = "password" if kind == "password" else "text"
    return (
        f'<form method="post" action="{e(action)}" id="{e(kind)}-form">'
        f'<input type="hidden" name="kind" value="{e(kind)}">{fields}'
        f'<label for="{e(kind)}-response">{e(label)}</label>'
        f'<input id="{e(kind)}-response" name="response" type="{kind_type}" required '
        f'autocomplete="{autocomplete}" inputmode="{mode}">'
        f'<button type="submit" id="{e(kind)}-submit">Continue</button></form>'
    )


def _passkey_link(action: str, return_to: str) -> str:
    """The second step: the passkey page of this pending login; a step-up: the passkey
    step-up page (its own challenge, bound to the session)."""
    if action == VERIFY_PATH:
        return '<p><a id="webauthn-link" href="/auth/passkeys/verify">Use a passkey</a></p>'
    href = "/auth/passkeys/step-up?return_to=" + quote(return_to, safe="")
    link = f'<a id="webauthn-link" href="{html.escape(href)}">Use a passkey</a>'
    return f"<p>{link}</p>"


def verify_page(action: str, kinds: Sequence[str], *, error: str = "") -> str:
    """The second step of a sign-in: one form per kind the user has."""
    forms = "".join(answer_form(action, kind) for kind in kinds)
    return _page("Second step", f"<h1>Confirm it is you</h1>{_error(error)}{forms}")


def enrol_page(action: str, view: EnrolmentView, *, error: str = "", intro: str = "") -> str:
    """Enrolment: the QR code, the secret in groups of four, and the confirmation form."""
    e = html.escape
    secret = " ".join(view.secret[i : i + 4] for i in range(0, len(view.secret), 4))
    body = (
        "<h1>Set up an authenticator app</h1>"
        + (f'<p class="notice" id="notice">{e(intro)}</p>' if intro else "")
        + _error(error)
        + "<p>Scan this code with your authenticator app, or type the key below.</p>"
        + f'<div id="qr">{view.qr_svg}</div>'
        + f'<p>Key: <code id="secret">{e(secret)}</code></p>'
        + answer_form(action, "totp", {"factor_id": view.factor_id})
    )
    return _page("Set up an authenticator app", body)


def recovery_page(codes: Iterable[str], continue_to: str) -> str:
    """The recovery codes, shown once."""
    e = html.escape
    items = "".join(f"<li><code>{e(code)}</code></li>" for code in codes)
    body = (
        "<h1>Recovery codes</h1><p>Keep these codes somewhere safe. Each works once, when "
        "you do not have your authenticator app. They are not shown again.</p>"
        f'<ul id="recovery-codes">{items}</ul>'
        f'<p><a id="continue" href="{e(continue_to)}">Continue</a></p>'
    )
    return _page("Recovery codes", body)


def step_up_page(
    action: str, kinds: Sequence[str], return_to: str, *, error: str = "", enrol_href: str = ""
) -> str:
    """Re-authentication for a route that needs a recent or stronger sign-in. A user without
    a second factor (``kinds`` is the password alone) is also shown ``enrol_href``: a page
    that needs a second factor cannot be reached with the password alone."""
    e = html.escape
    forms = "".join(answer_form(action, k, {"return_to": return_to}) for k in kinds)
    enrol = (
        f'<p id="enrol-hint">Some pages need a second factor: <a id="enrol" '
        f'href="{e(enrol_href)}">set up an authenticator app</a> after confirming it is you.</p>'
        if enrol_href and "password" in kinds else ""
    )
    body = (
        "<h1>Confirm it is you</h1><p>This page needs a recent sign-in.</p>"
        f"{_error(error)}{forms}{enrol}"
    )
    return _page("Confirm it is you", body)


def overview_page(summary: Mapping[str, Any], *, enrol_href: str, step_up_href: str) -> str:
    """The user's factors (:func:`extauthz.login.mfa.account.factor_summary` entries)."""
    e = html.escape
    rows = "".join(
        f'<tr data-factor="{e(f["id"])}"><td>{e(f["kind"])}</td>'
        f'<td>{"yes" if f["confirmed"] else "no"}</td><td>{e(_when(f["created_at"]))}</td>'
        f'<td>{e(_when(f["last_used_at"])) if f["last_used_at"] else "-"}</td>'
        f'<td>{e(str(f.get("remaining", "")))}</td></tr>'
        for f in summary["factors"]
    )
    table = (
        '<table id="factors"><tr><th>Kind</th><th>Confirmed</th><th>Added</th>'
        f"<th>Last used</th><th>Codes left</th></tr>{rows}</table>"
        if rows else '<p id="factors">None.</p>'
    )
    links = f'<p><a id="step-up" href="{e(step_up_href)}">Confirm it is you again</a></p>'
    if not summary["has_totp"]:
        links += f'<p><a id="enrol" href="{e(enrol_href)}">Set up an authenticator app</a></p>'
    links += '<p><a id="passkeys" href="/auth/passkeys">Passkeys</a></p>'
    required = "<p>Your account requires a second factor.</p>" if summary["required"] else ""
    body = f"<h1>Second factors</h1>{required}{table}{links}"
    return _page("Second factors", body, wide=True)
