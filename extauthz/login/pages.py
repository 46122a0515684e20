"""The authentication service's HTML: the login form, the logout form, the session page
and a short error page. Plain HTML forms that work without JavaScript; every value is
escaped, and the pages ship with a Content-Security-Policy that allows no script at all."""

from __future__ import annotations

import html
import time
from collections.abc import Mapping
from typing import Any

# no script, no plugin, no framing; forms may post only to this origin
HTML_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:26rem;margin:4rem auto;padding:0 1rem}"
    "label{display:block;margin:.8rem 0 .2rem}input{width:100%;padding:.4rem;box-sizing:border-box}"
    "button{margin-top:1rem;padding:.5rem 1.2rem}.error{color:#a00}.notice{color:#060}"
    "form.inline{display:inline}"
)


def _page(title: str, body: str) -> str:
    e = html.escape
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def login_page(
    *,
    action: str,
    return_to: str,
    username: str = "",
    error: str = "",
    notice: str = "",
) -> str:
    """The login form; it posts ``username``, ``password`` and ``return_to`` to ``action``."""
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


def session_page(summary: Mapping[str, Any], *, logout_action: str) -> str:
    """The signed-in user's own session (never the token) and the logout forms."""
    e = html.escape

    def when(seconds: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))

    rows = [
        ("User", summary["sub"]),
        ("Session id", summary["sid"]),
        ("Roles", " ".join(summary["roles"]) or "-"),
        ("Scopes", " ".join(summary["scopes"]) or "-"),
        ("Signed in", when(summary["created_at"])),
        ("Expires", when(summary["expires_at"])),
    ]
    table = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in rows)
    body = (
        f'<h1>Signed in as <span id="user">{e(summary["sub"])}</span></h1>'
        f"<table>{table}</table><p>"
        + logout_form(logout_action)
        + logout_form(logout_action, everywhere=True)
        + "</p>"
    )
    return _page("Your session", body)


def message_page(title: str, message: str) -> str:
    """A short page for errors (403, 429, 503) shown to browsers."""
    e = html.escape
    return _page(title, f"<h1>{e(title)}</h1><p id=\"message\">{e(message)}</p>")
