"""The authentication service's HTML: the login form, the logout form, the session page
and a short error page. Plain HTML forms that work without JavaScript; every value is
escaped, and the pages ship with a Content-Security-Policy that allows no script at all."""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping
from typing import Any


def html_headers(*, script: bool = False, form_targets: Iterable[str] = ()) -> dict[str, str]:
    """The headers of every page the service renders: a Content-Security-Policy allowing no
    script (``script``: the service's own scripts and requests to this origin, for the pages
    that need them), no plugin and no framing (``frame-ancestors 'none'``, ``X-Frame-Options:
    DENY``); forms post only to this origin, plus ``form_targets`` (origins a form's answer
    redirects to: browsers hold those redirects to ``form-action`` too, CSP Level 3)."""
    directives = ["default-src 'none'"]
    if script:
        directives += ["script-src 'self'", "connect-src 'self'"]
    directives += [
        "style-src 'unsafe-inline'",
        " ".join(["form-action 'self'", *form_targets]),
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
    return {
        "Content-Security-Policy": "; ".join(directives),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


HTML_HEADERS: Mapping[str, str] = html_headers()
"""The login pages' headers: no script at all."""

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:26rem;margin:4rem auto;padding:0 1rem}"
    "label{display:block;margin:.8rem 0 .2rem}input{width:100%;padding:.4rem;box-sizing:border-box}"
    "button{margin-top:1rem;padding:.5rem 1.2rem}.error{color:#a00}.notice{color:#060}"
    "form.inline{display:inline}body.wide{max-width:52rem}"
    "th,td{text-align:left;padding:.2rem .6rem .2rem 0}"
)


def _page(title: str, body: str, *, wide: bool = False) -> str:
    e = html.escape
    body_tag = '<body class="wide">' if wide else "<body>"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title><style>{_STYLE}</style></head>"
        f"{body_tag}<main>{body}</main></body></html>\n"
    )


def login_page(
    *,
    action: str,
    return_to: str,
    username: str = "",
    error: str = "",
    notice: str = "",
    passkey_href: str = "",
) -> str:
    """The login form; it posts ``username``, ``password`` and ``return_to`` to ``action``.
    ``passkey_href``: the page that signs in with a passkey instead (none: no link)."""
    e = html.escape
    parts = ["<h1>Sign in</h1>"]
    if notice:
        parts.append(f'<p class="notice" id="notice">{e(notice)}</p>')
    if error:
        parts.append(f'<p class="error" id="error" role="alert">{e(error)}</p>')
    parts.append(
        f'<form method="post" action="{e(action)}" id="login">'
        f'<input type="hidden" name="return_to" value="{e(return_to)}">'
        '<label for="username">User name</label>'
        f'<input id="username" name="username" autocomplete="username" required '
        f'autofocus value="{e(username)}">'
        '<label for="password">Password</label>'
        '<input id="password" name="password" type="password" '
        'autocomplete="current-password" required>'
        '<button type="submit" id="submit">Sign in</button>'
        "</form>"
    )
    if passkey_href:
        parts.append(f'<p><a id="passkey-sign-in" href="{e(passkey_href)}">Sign in with a '
                     "passkey</a></p>")
    return _page("Sign in", "".join(parts))


def logout_form(action: str, *, everywhere: bool = False) -> str:
    """A form that posts to ``action`` (``everywhere=1`` for "log out everywhere")."""
    e = html.escape
    field = '<input type="hidden" name="everywhere" value="1">' if everywhere else ""
    label = "Log out everywhere" if everywhere else "Log out"
    ident = "logout-everywhere" if everywhere else "logout"
    return (
        f'<form class="inline" method="post" action="{e(action)}" id="{ident}-form">{field}'
        f'<button type="submit" id="{ident}">{label}</button></form> '
    )


def logout_page(action: str) -> str:
    """The "Sign out" page: both logout buttons."""
    body = (
        "<h1>Sign out</h1><p>"
        + logout_form(action)
        + logout_form(action, everywhere=True)
        + "</p>"
    )
    return _page("Sign out", body)


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def end_form(action: str, sid: str) -> str:
    """A form that posts ``sid`` to ``action`` (the button's id: ``end-<sid>``)."""
    e = html.escape
    return (
        f'<form class="inline" method="post" action="{e(action)}">'
        f'<input type="hidden" name="sid" value="{e(sid)}">'
        f'<button type="submit" id="end-{e(sid)}">End</button></form>'
    )


def _table(
    table_id: str, heading: str, columns: tuple[str, ...], rows: list[tuple[str, list[str]]],
    end_action: str,
) -> str:
    """A table of sessions: one row per ``(sid, cells)`` with its "End" form; "None." when
    there are none."""
    e = html.escape
    if not rows:
        return f'<h2>{e(heading)}</h2><p id="{e(table_id)}">None.</p>'
    head = "".join(f"<th>{e(c)}</th>" for c in columns)
    body = "".join(
        f'<tr data-sid="{e(sid)}">'
        + "".join(f"<td>{e(cell)}</td>" for cell in cells)
        + f"<td>{end_form(end_action, sid)}</td></tr>"
        for sid, cells in rows
    )
    return f'<h2>{e(heading)}</h2><table id="{e(table_id)}"><tr>{head}<th></th></tr>{body}</table>'


def session_page(summary: Mapping[str, Any], *, logout_action: str, end_action: str) -> str:
    """The signed-in user's sessions (:func:`extauthz.login.account.overview_summary`; never
    a token): this browser's, with the logout forms, then the other logins, the applications
    and the API keys, each with a form that ends it."""
    e = html.escape

    def scopes(entry: Mapping[str, Any]) -> str:
        return " ".join(entry["scopes"]) or "-"

    rows = [
        ("User", summary["sub"]),
        ("Session id", summary["sid"]),
        ("Roles", " ".join(summary["roles"]) or "-"),
        ("Scopes", " ".join(summary["scopes"]) or "-"),
        ("Signed in", _when(summary["created_at"])),
        ("Expires", _when(summary["expires_at"])),
    ]
    table = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in rows)
    logins = [
        (s["sid"], [_when(s["created_at"]), _when(s["last_seen"]), _when(s["expires_at"])])
        for s in summary.get("sessions", ())
    ]
    applications = [
        (a["sid"], [a["client_id"], scopes(a), _when(a["created_at"]), _when(a["expires_at"])])
        for a in summary.get("applications", ())
    ]
    api_keys = [
        (k["sid"], [k["sid"], k["name"] or "-", scopes(k), _when(k["expires_at"]),
                    _when(k["last_used"])])
        for k in summary.get("api_keys", ())
    ]  # fmt: skip
    body = (
        f'<h1>Signed in as <span id="user">{e(summary["sub"])}</span></h1>'
        f'<h2>This browser</h2><table id="this-browser">{table}</table><p>'
        + logout_form(logout_action)
        + logout_form(logout_action, everywhere=True)
        + '</p><p><a id="mfa" href="/auth/mfa">Second factors and sign-in methods</a></p>'
        + _table("other-sessions", "Other browsers", ("Signed in", "Last seen", "Expires"),
                 logins, end_action)
        + _table("applications", "Applications",
                 ("Application", "Scopes", "Issued", "Expires"), applications, end_action)
        + _table("api-keys", "API keys", ("Key id", "Name", "Scopes", "Expires", "Last used"),
                 api_keys, end_action)
    )  # fmt: skip
    return _page("Your sessions", body, wide=True)


def message_page(title: str, message: str) -> str:
    """A short page for errors (403, 429, 503) shown to browsers."""
    e = html.escape
    return _page(title, f"<h1>{e(title)}</h1><p id=\"message\">{e(message)}</p>")
