"""The aiohttp adapter of the passkey pages (:mod:`extauthz.login.mfa.passkeys`), beside
:mod:`extauthz.login.mfa.http`: ``/auth/passkeys`` (the user's passkeys; ``/register``,
``/remove``), ``/auth/passkeys/sign-in`` (a passkey alone), ``/auth/passkeys/verify`` (the
second step's passkey page; the answer goes to ``/auth/mfa/verify``) and the script
``/auth/static/passkeys.js``. docs/authentication.md, 'Passkeys'.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import quote

from aiohttp import web

from extauthz.check.context import RequestContext
from extauthz.errors import Denied, StoreUnavailable, Unauthenticated
from extauthz.login.http import (
    AuthHandlers,
    _add_cookies,
    _error,
    _html,
    _is_form,
    _json,
    _read_fields,
    _redirect,
    _refused,
    _unavailable,
    _wants_html,
)
from extauthz.login.mfa import passkey_pages as pages
from extauthz.login.mfa.account import STEP_UP_PATH, Refreshed, StepUpRequired
from extauthz.login.mfa.passkeys import (
    PASSKEYS_PATH,
    NoSuchPasskey,
    PasskeyForm,
    PasskeyRefused,
    Passkeys,
    credential_text,
    passkey_summary,
)
from extauthz.login.mfa.steps import VERIFY_PATH, PendingGone
from extauthz.login.service import LOGIN_PATH, SignedIn, session_summary

REGISTER_PATH = f"{PASSKEYS_PATH}/register"
REMOVE_PATH = f"{PASSKEYS_PATH}/remove"
SIGN_IN_PATH = f"{PASSKEYS_PATH}/sign-in"
SECOND_STEP_PATH = f"{PASSKEYS_PATH}/verify"
STEP_UP = f"{PASSKEYS_PATH}/step-up"
REFUSED = "The passkey was not accepted."
_UNAVAILABLE = "Please try again shortly."
_ReadForm = Callable[[], Awaitable[PasskeyForm]]
_REFUSALS = (StoreUnavailable, Denied, StepUpRequired, PendingGone, PasskeyRefused, NoSuchPasskey)


def _script() -> bytes:
    return resources.files("extauthz.login.mfa").joinpath("static/passkeys.js").read_bytes()


async def read_passkey(request: web.Request) -> PasskeyForm:
    """``credential`` (object or JSON text), ``name``, ``return_to``.
    :raises web.HTTPException: 413 / 415 / 400."""
    fields = await _read_fields(request)

    def text(name: str) -> str:
        value = fields.get(name, "")
        return value if isinstance(value, str) and len(value) <= 4096 else ""

    return PasskeyForm(credential_text(fields.get("credential")), text("name"),
                       text("return_to"))


class PasskeyHandlers:
    """The passkey routes over ``passkeys``; ``auth`` lends its request context."""

    def __init__(self, auth: AuthHandlers, passkeys: Passkeys) -> None:
        self.auth, self.passkeys = auth, passkeys
        self.script = _script()
        auth.passkey_sign_in = SIGN_IN_PATH  # the login page links to it

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(pages.SCRIPT_PATH, self.serve_script),
            web.get(PASSKEYS_PATH, self.overview),
            web.post(f"{REGISTER_PATH}/options", self.registration_options),
            web.post(REGISTER_PATH, self.register),
            web.post(REMOVE_PATH, self.remove),
            web.get(SIGN_IN_PATH, self.sign_in_page),
            web.post(f"{SIGN_IN_PATH}/options", self.sign_in_options),
            web.post(SIGN_IN_PATH, self.sign_in),
            web.get(STEP_UP, self.step_up_page),
            web.post(f"{STEP_UP}/options", self.step_up_options),
            web.post(STEP_UP, self.step_up),
            web.get(SECOND_STEP_PATH, self.second_step_page),
            web.get(f"{SECOND_STEP_PATH}/options", self.second_step_options),
        ]

    async def serve_script(self, request: web.Request) -> web.Response:
        response = web.Response(body=self.script, content_type="text/javascript",
                                charset="utf-8")
        response.headers.update({"X-Content-Type-Options": "nosniff",
                                 "Cache-Control": "no-cache"})
        return response

    def _failure(self, html: bool, back_to: str, exc: Exception) -> web.Response:
        """503; the login (no session); the step-up (not fresh); 400 (refused answer);
        404 (no such passkey); the login again (no pending login); 403/429 (``Denied``)."""
        if isinstance(exc, StoreUnavailable):
            return _unavailable(html, _UNAVAILABLE)
        if isinstance(exc, Unauthenticated):
            location = f"{LOGIN_PATH}?return_to={quote(back_to, safe='')}"
            return _redirect(location) if html else _json(
                401, {"error": "unauthenticated", "location": location})
        if isinstance(exc, StepUpRequired):
            location = f"{STEP_UP_PATH}?return_to={quote(back_to, safe='')}"
            return _redirect(location) if html else _json(401, {
                "error": "insufficient_user_authentication", "location": location,
                "error_description": "a recent sign-in is required"})
        if isinstance(exc, PendingGone):
            return _redirect(LOGIN_PATH) if html else _json(401, {
                "error": "login_expired", "location": LOGIN_PATH})
        if isinstance(exc, PasskeyRefused):
            return _error(html, 400, "invalid_passkey", REFUSED)
        if isinstance(exc, NoSuchPasskey):
            return _error(html, 404, "not_found", "No such passkey.")
        assert isinstance(exc, Denied)
        return _refused(html, exc)

    # -- the account area --------------------------------------------------------------------

    async def overview(self, request: web.Request) -> web.Response:
        html = _wants_html(request)
        try:
            session, mine = await self.passkeys.overview(self.auth.context(request))
        except _REFUSALS as exc:
            return self._failure(html, PASSKEYS_PATH, exc)
        listed = [passkey_summary(f) for f in mine]
        if not html:
            return _json(200, {"sub": session.sub, "passkeys": listed})
        notice = {"added": "Passkey added.", "removed": "Passkey removed."}.get(
            request.query.get("done", ""), "")
        page = pages.passkeys_page(listed, remove_action=REMOVE_PATH, notice=notice,
                                   options=f"{REGISTER_PATH}/options", action=REGISTER_PATH)
        return _html(200, page, pages.PASSKEY_HTML_HEADERS)

    async def _options(
        self, request: web.Request,
        make: Callable[[RequestContext], Awaitable[dict[str, Any]]], back_to: str,
    ) -> web.Response:
        """The JSON options of a ceremony, or what a refusal looks like to a script."""
        try:
            options = await make(self.auth.context(request))
        except _REFUSALS as exc:
            return self._failure(False, back_to, exc)
        return _json(200, options)

    async def registration_options(self, request: web.Request) -> web.Response:
        return await self._options(request, self.passkeys.registration_options, PASSKEYS_PATH)

    async def register(self, request: web.Request) -> web.Response:
        ctx = self.auth.context(request)
        try:
            changed = await self.passkeys.register(ctx, lambda: read_passkey(request))
        except _REFUSALS as exc:
            return self._failure(False, PASSKEYS_PATH, exc)
        assert changed.factor is not None
        body = {"passkey": passkey_summary(changed.factor), "revoked": changed.revoked,
                "location": f"{PASSKEYS_PATH}?done=added"}
        if changed.recovery_codes:
            body["recovery_codes"] = list(changed.recovery_codes)
        response = _json(200, body)
        _add_cookies(response, changed.set_cookies)
        return response

    async def remove(self, request: web.Request) -> web.Response:
        html = _is_form(request)

        async def factor_id() -> str:
            value = (await _read_fields(request)).get("factor_id")
            return value if isinstance(value, str) and len(value) <= 64 else ""

        try:
            changed = await self.passkeys.remove(self.auth.context(request), factor_id)
        except _REFUSALS as exc:
            return self._failure(html, PASSKEYS_PATH, exc)
        location = f"{PASSKEYS_PATH}?done=removed"
        response = _redirect(location) if html else _json(
            200, {"removed": True, "revoked": changed.revoked, "location": location})
        _add_cookies(response, changed.set_cookies)
        return response

    # -- sign-in -----------------------------------------------------------------------------

    def _page(self, request: web.Request, build: Callable[[str, str, str], str],
              path: str) -> web.Response:
        """A ceremony page whose options are at ``<path>/options`` and answer at ``path``."""
        return_to = self.auth.service.return_to(request.query.get("return_to", ""))
        return _html(200, build(f"{path}/options", path, return_to), pages.PASSKEY_HTML_HEADERS)

    async def sign_in_page(self, request: web.Request) -> web.Response:
        return self._page(request, pages.sign_in_page, SIGN_IN_PATH)

    async def sign_in_options(self, request: web.Request) -> web.Response:
        return await self._options(request, self.passkeys.sign_in_options, SIGN_IN_PATH)

    async def sign_in(self, request: web.Request) -> web.Response:
        return await self._authenticated(request, self.passkeys.sign_in, SIGN_IN_PATH)

    async def _authenticated(
        self, request: web.Request, call: Callable[[RequestContext, _ReadForm],
                                                   Awaitable[SignedIn | Refreshed]],
        back_to: str,
    ) -> web.Response:
        """A sign-in or step-up with a passkey: the session's summary, ``location`` (its
        ``return_to``) and the cookie with its token; or the refusal."""
        try:
            done = await call(self.auth.context(request), lambda: read_passkey(request))
        except _REFUSALS as exc:
            return self._failure(False, back_to, exc)
        body: dict[str, Any] = {**session_summary(done.session), "location": done.return_to}
        response = _json(200, body)
        _add_cookies(response, done.set_cookies)
        return response

    # -- step-up -----------------------------------------------------------------------------

    async def step_up_page(self, request: web.Request) -> web.Response:
        return self._page(request, pages.step_up_page, STEP_UP)

    async def step_up_options(self, request: web.Request) -> web.Response:
        return await self._options(request, self.passkeys.step_up_options, STEP_UP)

    async def step_up(self, request: web.Request) -> web.Response:
        return await self._authenticated(request, self.passkeys.step_up, STEP_UP)

    # -- the second step ---------------------------------------------------------------------

    async def second_step_page(self, request: web.Request) -> web.Response:
        try:
            await self.passkeys.steps.pending_login(self.auth.context(request))
        except PendingGone:
            return _redirect(LOGIN_PATH)
        except StoreUnavailable:
            return _unavailable(True, _UNAVAILABLE)
        page = pages.second_step_page(f"{SECOND_STEP_PATH}/options", VERIFY_PATH)
        return _html(200, page, pages.PASSKEY_HTML_HEADERS)

    async def second_step_options(self, request: web.Request) -> web.Response:
        return await self._options(request, self.passkeys.second_step_options, LOGIN_PATH)
