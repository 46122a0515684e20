"""The aiohttp adapter of the second-factor pages, beside :mod:`extauthz.login.http` (whose
request parsing and responses it shares): ``/auth/mfa`` (overview), ``/auth/mfa/enrol``,
``/auth/mfa/verify`` and ``/auth/mfa/setup`` (the second step of a sign-in, on the pending
login's cookie), ``/auth/mfa/step-up``. HTML for forms and browsers, JSON for other clients.
docs/authentication.md, 'Second factors and step-up'.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from aiohttp import web

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
from extauthz.login.mfa import pages
from extauthz.login.mfa.account import (
    ENROL_PATH,
    STEP_UP_PATH,
    AlreadyEnrolled,
    AnswerForm,
    Failed,
    MfaAccount,
    Refreshed,
    StepUpRequired,
    factor_summary,
)
from extauthz.login.mfa.steps import (
    MFA_PATH,
    NO_PENDING,
    SETUP_PATH,
    VERIFY_PATH,
    WRONG_CODE,
    PendingGone,
    SecondSteps,
    StepFailed,
    StepForm,
)
from extauthz.login.service import LOGIN_PATH
from extauthz.store.model import Session

_UNAVAILABLE = "Please try again shortly."
# what the account side raises instead of answering (MfaHandlers._failure)
_REFUSALS = (StoreUnavailable, Denied, StepUpRequired, AlreadyEnrolled)


def _wrong_code() -> web.Response:
    return _json(401, {"error": "invalid_code", "error_description": WRONG_CODE})


def _text(fields: Mapping[str, Any], name: str, limit: int = 4096) -> str:
    value = fields.get(name, "")
    return value if isinstance(value, str) and len(value) <= limit else ""


async def read_answer(request: web.Request) -> AnswerForm:
    """``kind``, ``response``, ``factor_id``, ``return_to`` (form or JSON; missing: ``""``).
    :raises web.HTTPException: 413 / 415 / 400."""
    fields = await _read_fields(request)
    return AnswerForm(_text(fields, "kind", 32), _text(fields, "response"),
                      _text(fields, "factor_id", 64), _text(fields, "return_to"))


def _authenticated(
    html: bool, session: Session, set_cookies: tuple[str, ...], target: str,
    recovery_codes: tuple[str, ...],
) -> web.Response:
    """A sign-in, enrolment or step-up that succeeded: the recovery codes once (when there
    are) or a 303 to ``target``; JSON: the session's ``sub``, ``sid``, ``amr``, ``auth_time``
    (and ``recovery_codes``). With the new session cookie."""
    if html:
        response = (
            _html(200, pages.recovery_page(recovery_codes, target))
            if recovery_codes else _redirect(target)
        )
    else:
        body: dict[str, Any] = {"sub": session.sub, "sid": session.sid, "amr": list(session.amr),
                                "auth_time": int(session.authenticated_at)}
        if recovery_codes:
            body["recovery_codes"] = list(recovery_codes)
        response = _json(200, body)
    _add_cookies(response, set_cookies)
    return response


class MfaHandlers:
    """The ``/auth/mfa*`` handlers over ``steps`` and ``account``; ``auth`` lends its
    request context (trusted proxies) and realm."""

    def __init__(self, auth: AuthHandlers, steps: SecondSteps, account: MfaAccount) -> None:
        self.auth, self.steps, self.account = auth, steps, account

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(MFA_PATH, self.overview),
            web.get(ENROL_PATH, self.enrol_page),
            web.post(ENROL_PATH, self.enrol),
            web.get(VERIFY_PATH, self.step_page),
            web.post(VERIFY_PATH, self.step),
            web.get(SETUP_PATH, self.step_page),
            web.post(SETUP_PATH, self.step),
            web.get(STEP_UP_PATH, self.step_up_page),
            web.post(STEP_UP_PATH, self.step_up),
        ]

    def _to_login(self, html: bool, back_to: str) -> web.Response:
        if html:
            return _redirect(f"{LOGIN_PATH}?return_to={quote(back_to, safe='')}")
        body = {"error": "unauthenticated", "error_description": "no valid session"}
        return _json(401, body, {"WWW-Authenticate": f'Bearer realm="{self.auth.realm}"'})

    def _to_step_up(self, html: bool, back_to: str) -> web.Response:
        location = f"{STEP_UP_PATH}?return_to={quote(back_to, safe='')}"
        if html:
            return _redirect(location)
        body = {"error": "insufficient_user_authentication", "location": location,
                "error_description": "a recent sign-in is required"}
        return _json(401, body)

    def _failure(self, html: bool, back_to: str, exc: Exception) -> web.Response:
        """What a refusal of the account side looks like: 503, the login (no session), the
        step-up page (not fresh), the overview (enrolled already), 403/429 (``Denied``)."""
        if isinstance(exc, StoreUnavailable):
            return _unavailable(html, _UNAVAILABLE)
        if isinstance(exc, Unauthenticated):
            return self._to_login(html, back_to)
        if isinstance(exc, StepUpRequired):
            return self._to_step_up(html, back_to)
        if isinstance(exc, AlreadyEnrolled):
            return _redirect(MFA_PATH) if html else _json(409, {"error": "already_enrolled"})
        assert isinstance(exc, Denied)
        return _refused(html, exc)

    # -- the second step of a sign-in --------------------------------------------------------

    def _pending_gone(self, html: bool) -> web.Response:
        if html:
            response = _redirect(LOGIN_PATH)
        else:
            response = _json(401, {"error": "login_expired", "error_description": NO_PENDING})
        _add_cookies(response, self.steps.pending_cookie.clearing())
        return response

    async def step_page(self, request: web.Request) -> web.Response:
        try:
            view = await self.steps.view(self.auth.context(request))
        except PendingGone:
            return self._pending_gone(True)
        except StoreUnavailable:
            return _unavailable(True, _UNAVAILABLE)
        if view.enrolment is not None:
            intro = "Your account needs a second factor before you can continue."
            return _html(200, pages.enrol_page(SETUP_PATH, view.enrolment, intro=intro))
        return _html(200, pages.verify_page(VERIFY_PATH, view.kinds))

    async def step(self, request: web.Request) -> web.Response:
        html = _is_form(request)

        async def form() -> StepForm:
            answer = await read_answer(request)
            return StepForm(answer.kind, answer.response)

        try:
            outcome = await self.steps.complete(self.auth.context(request), form)
        except PendingGone:
            return self._pending_gone(html)
        except StoreUnavailable:
            return _unavailable(html, _UNAVAILABLE)
        except Denied as denial:
            return _refused(html, denial)
        if isinstance(outcome, StepFailed):
            if not html:
                return _wrong_code()
            view = outcome.view
            if view.enrolment is not None:
                return _html(401, pages.enrol_page(SETUP_PATH, view.enrolment, error=WRONG_CODE))
            return _html(401, pages.verify_page(VERIFY_PATH, view.kinds, error=WRONG_CODE))
        return _authenticated(html, outcome.signed_in.session, outcome.signed_in.set_cookies,
                              outcome.signed_in.return_to, outcome.recovery_codes)

    # -- the user's own session --------------------------------------------------------------

    async def overview(self, request: web.Request) -> web.Response:
        html = _wants_html(request)
        try:
            session, factors, required = await self.account.overview(self.auth.context(request))
        except _REFUSALS as exc:
            return self._failure(html, MFA_PATH, exc)
        summary = {
            "sub": session.sub, "amr": list(session.amr), "required": required,
            "auth_time": int(session.authenticated_at),
            "factors": [factor_summary(f) for f in factors],
            "has_totp": any(f.kind == "totp" and f.confirmed for f in factors),
        }
        if html:
            step_up = f"{STEP_UP_PATH}?return_to={quote(MFA_PATH, safe='')}"
            return _html(200, pages.overview_page(summary, enrol_href=ENROL_PATH,
                                                  step_up_href=step_up))
        return _json(200, summary)

    async def enrol_page(self, request: web.Request) -> web.Response:
        html = _wants_html(request)
        try:
            view = await self.account.enrolment(self.auth.context(request))
        except _REFUSALS as exc:
            return self._failure(html, ENROL_PATH, exc)
        if html:
            return _html(200, pages.enrol_page(ENROL_PATH, view))
        return _json(200, {"factor_id": view.factor_id, "secret": view.secret, "uri": view.uri})

    async def enrol(self, request: web.Request) -> web.Response:
        html = _is_form(request)
        ctx = self.auth.context(request)
        try:
            outcome = await self.account.confirm(ctx, lambda: read_answer(request))
        except _REFUSALS as exc:
            return self._failure(html, ENROL_PATH, exc)
        if isinstance(outcome, Failed):
            if not html:
                return _wrong_code()
            try:
                view = await self.account.enrolment(ctx)
            except _REFUSALS:
                return _error(True, 401, "invalid_code", WRONG_CODE)
            return _html(401, pages.enrol_page(ENROL_PATH, view, error=WRONG_CODE))
        return self._refreshed(html, outcome, MFA_PATH)

    def _refreshed(self, html: bool, outcome: Refreshed, fallback: str) -> web.Response:
        return _authenticated(html, outcome.session, outcome.set_cookies,
                              outcome.return_to or fallback, outcome.recovery_codes)

    # -- step-up -----------------------------------------------------------------------------

    async def step_up_page(self, request: web.Request) -> web.Response:
        return_to = self.auth.service.return_to(request.query.get("return_to", ""))
        try:
            kinds = await self.account.step_up_kinds(self.auth.context(request))
        except _REFUSALS as exc:
            return self._failure(True, return_to, exc)
        return _html(200, pages.step_up_page(STEP_UP_PATH, kinds, return_to,
                                             enrol_href=ENROL_PATH))

    async def step_up(self, request: web.Request) -> web.Response:
        html = _is_form(request)
        try:
            outcome = await self.account.step_up(
                self.auth.context(request), lambda: read_answer(request)
            )
        except _REFUSALS as exc:
            return self._failure(html, STEP_UP_PATH, exc)
        if isinstance(outcome, Failed):
            if not html:
                return _wrong_code()
            page = pages.step_up_page(STEP_UP_PATH, outcome.kinds, outcome.return_to,
                                      error=WRONG_CODE, enrol_href=ENROL_PATH)
            return _html(401, page)
        return self._refreshed(html, outcome, self.auth.service.default_return_to)
