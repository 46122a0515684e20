"""The demo upstream: echoes every request and verifies the JWT that extauthz minted.

Run it as ``python demo/echo_upstream.py --listen 127.0.0.1:9003 --jwks-url URL --issuer ISS
--audience AUD``. Any method and path answers 200 with JSON::

    {"method": "GET", "path": "/hello?x=1",
     "headers": {"name": ["value", ...]},            # every header received, lower-case names
     "jwt": {"verified": bool, "claims": {...} | null, "error": str | null,
             "header_count": int}}                    # how many Authorization headers came

or, when the ``Accept`` header prefers ``text/html``, a small page with the user (``sub``) and
the verified claims (never the JWT itself).

Two routes also change the session through the gateway (docs/session-updates.md), by answering
with the ``x-extauthz-session-update`` header; the next request's JWT shows the change:

* ``/session/theme/<name>`` (``name``: 1-20 lower-case letters) sets ``data.theme``;
* ``/session/cart/add`` adds one to ``data.cart`` (read from the verified JWT).

The JWT is verified as an upstream service should: signature with a key from the JWKS chosen by
``kid``, an explicit algorithm list (ES256, EdDSA, RS256) that must also match the key,
``iss``, ``aud``, ``exp``, ``nbf`` and ``iat`` (RFC 7519 section 4.1), with no leeway (the
clock contract: extauthz backdates ``iat``/``nbf``). The JWKS is cached for at most
``--jwks-max-age`` seconds (default 30) after the last successful fetch and fetched again when an
unknown ``kid`` shows up (at most once per second); every fetch replaces the key set, so a key
removed from the JWKS is refused at most ``--jwks-max-age`` seconds after extauthz stopped
publishing it, and while the JWKS cannot be fetched past that age every JWT is refused (docs/
operations.md, 'Emergency key removal').
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import html
import json
import logging
import re
import time
from typing import Any

import aiohttp
import jwt
from aiohttp import web

ALGORITHMS = ("ES256", "EdDSA", "RS256")
# the clock contract (extauthz/clock.py): extauthz backdates iat and nbf, so no leeway is needed
LEEWAY_SECONDS = 0
# how long a fetched JWKS is trusted: the bound on accepting a key after its removal
JWKS_MAX_AGE_SECONDS = 30.0
log = logging.getLogger("echo_upstream")


class JwtError(Exception):
    """The request's JWT is missing, malformed or fails verification (message says why)."""


class JwksCache:
    """Signing keys from a JWKS URL, by ``kid``.

    The key set of the last successful fetch is used for ``max_age`` seconds (whatever the
    response's ``Cache-Control`` says); then it is fetched again, and a key no longer published
    is gone. While the JWKS cannot be fetched, a set older than ``max_age`` is not used: every
    JWT is refused (fail closed) and a fetch is tried again at most every
    ``min_refetch_interval`` seconds. An unknown ``kid`` triggers a refetch (a key rotated in
    since the last fetch), at most once every ``min_refetch_interval`` seconds: a stream of
    tokens with made-up ``kid`` values must not turn into a stream of JWKS requests.
    """

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        *,
        max_age: float = JWKS_MAX_AGE_SECONDS,
        min_refetch_interval: float = 1.0,
        timeout: float = 2.0,
    ) -> None:
        self.url = url
        self.fetches = 0
        self._session = session
        self._max_age = max_age
        self._min_refetch_interval = min_refetch_interval
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._keys: dict[str, jwt.PyJWK] = {}
        # monotonic times: the last successful fetch, the last failed one, the last refetch
        # for an unknown kid
        self._fetched_at = self._failed_at = self._refetched_for_kid_at = float("-inf")
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return time.monotonic() - self._fetched_at < self._max_age

    async def key(self, kid: str) -> jwt.PyJWK:
        """The key with this ``kid``. :raises JwtError: unknown kid, or the JWKS unreachable
        and the last fetched set older than ``max_age``."""
        if kid in self._keys and self._fresh():
            return self._keys[kid]
        async with self._lock:
            now, every = time.monotonic(), self._min_refetch_interval
            if not self._fresh():
                if now - self._failed_at >= every:  # an unreachable JWKS is not hammered
                    await self._fetch()
            elif kid not in self._keys and now - self._refetched_for_kid_at >= every:
                self._refetched_for_kid_at = now
                await self._fetch()
        if not self._fresh():
            raise JwtError(f"JWKS {self.url} not fetched within {self._max_age:g} s")
        if kid not in self._keys:
            raise JwtError(f"no key with kid {kid!r} in the JWKS")
        return self._keys[kid]

    async def _fetch(self) -> None:
        started = time.monotonic()
        self.fetches += 1
        try:
            async with self._session.get(self.url, timeout=self._timeout) as resp:
                resp.raise_for_status()
                document = await resp.json(content_type=None)
            jwks = jwt.PyJWKSet.from_dict(document)
        except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWTError) as exc:
            self._failed_at = started
            raise JwtError(f"JWKS {self.url} unavailable: {type(exc).__name__}: {exc}") from exc
        # the whole set is replaced: a key no longer published is dropped here
        self._keys = {k.key_id: k for k in jwks.keys if k.key_id}
        self._fetched_at = started


class JwtVerifier:
    def __init__(self, jwks: JwksCache, issuer: str, audience: str) -> None:
        self.jwks = jwks
        self.issuer = issuer
        self.audience = audience

    async def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token. :raises JwtError: with the reason."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise JwtError(f"malformed JWT: {exc}") from exc
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise JwtError(f"algorithm {alg!r} is not allowed")
        if not isinstance(kid, str) or not kid:
            raise JwtError("JWT header has no kid")
        key = await self.jwks.key(kid)
        # the token's alg must be the key's alg, and an allowed one (no algorithm confusion)
        algorithms = [a for a in ALGORITHMS if a == key.algorithm_name]
        if not algorithms:
            raise JwtError(f"key {kid!r} is for {key.algorithm_name}, which is not allowed")
        try:
            return jwt.decode(
                token,
                key=key.key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise JwtError(f"{type(exc).__name__}: {exc}") from exc


def _bearer(values: list[str]) -> str:
    if not values:
        raise JwtError("no Authorization header")
    if len(values) > 1:
        raise JwtError(f"{len(values)} Authorization headers; expected one")
    scheme, _, token = values[0].strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise JwtError("Authorization is not a Bearer token")
    return token.strip()


def prefers_html(accept: str) -> bool:
    """Whether an ``Accept`` header (RFC 9110 section 12.5.1) ranks HTML above JSON."""
    html_q = json_q = 0.0
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        if media in ("text/html", "application/xhtml+xml"):
            html_q = max(html_q, q)
        elif media == "application/json":
            json_q = max(json_q, q)
    return html_q > 0 and html_q >= json_q


def _html_page(method: str, path: str, result: dict[str, Any]) -> str:
    e = html.escape
    claims = result["claims"]
    user = claims.get("sub", "?") if claims else None
    if result["verified"]:
        status = f"Signed in as <strong>{e(str(user))}</strong>; the JWT is valid."
    else:
        status = f"No valid JWT: {e(str(result['error']))}"
    claims_text = json.dumps(claims, indent=2, sort_keys=True) if claims else "none"
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<title>extauthz echo upstream</title></head><body>"
        "<h1>extauthz echo upstream</h1>"
        f"<p>{e(method)} <code>{e(path)}</code></p>"
        f"<p>{status}</p>"
        f"<h2>JWT claims</h2><pre>{e(claims_text)}</pre>"
        "</body></html>\n"
    )


VERIFIER = web.AppKey("verifier", JwtVerifier)
SESSION_UPDATE_HEADER = "x-extauthz-session-update"
_THEME = re.compile(r"[a-z]{1,20}")


_JWS_COMPACT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def redact_jwts(value: str) -> str:
    """Replace every JWS compact serialisation in ``value`` with a short digest, so the
    echo shows that a JWT arrived without handing it to the client (the phantom-token
    pattern keeps JWTs away from clients)."""
    return _JWS_COMPACT.sub(
        lambda m: f"<jwt sha256:{hashlib.sha256(m.group(0).encode()).hexdigest()[:12]}>", value
    )


def session_update(path: str, claims: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON Merge Patch (RFC 7396) of the session's ``data`` that ``path`` asks for, if any:
    ``/session/theme/<name>`` and ``/session/cart/add`` (which needs verified ``claims``)."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    if len(parts) == 3 and parts[:2] == ["session", "theme"] and _THEME.fullmatch(parts[2]):
        return {"theme": parts[2]}
    if parts == ["session", "cart", "add"] and claims is not None:
        cart = claims.get("data", {}).get("cart", 0)
        return {"cart": (cart if isinstance(cart, int) else 0) + 1}
    return None


async def echo(request: web.Request) -> web.StreamResponse:
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers.setdefault(name.lower(), []).append(redact_jwts(value))
    authorization = request.headers.getall("Authorization", [])
    result: dict[str, Any] = {
        "verified": False,
        "claims": None,
        "error": None,
        "header_count": len(authorization),
    }
    try:
        result["claims"] = await request.app[VERIFIER].verify(_bearer(authorization))
        result["verified"] = True
    except JwtError as exc:
        result["error"] = str(exc)
    update = session_update(request.path, result["claims"])
    extra = {SESSION_UPDATE_HEADER: json.dumps(update)} if update is not None else {}
    if prefers_html(request.headers.get("Accept", "")):
        page = _html_page(request.method, request.raw_path, result)
        return web.Response(
            text=page,
            content_type="text/html",
            headers={"Content-Security-Policy": "default-src 'none'", **extra},
        )
    body = {"method": request.method, "path": request.raw_path, "headers": headers, "jwt": result}
    if update is not None:
        body["session_update"] = update
    return web.json_response(body, headers=extra)


def create_app(
    jwks_url: str, issuer: str, audience: str, *, jwks_max_age: float = JWKS_MAX_AGE_SECONDS
) -> web.Application:
    """The echo application; its HTTP client for the JWKS lives as long as the app."""
    app = web.Application()

    async def client_session(app: web.Application) -> Any:
        async with aiohttp.ClientSession() as session:
            jwks = JwksCache(jwks_url, session, max_age=jwks_max_age)
            app[VERIFIER] = JwtVerifier(jwks, issuer, audience)
            yield

    app.cleanup_ctx.append(client_session)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:9003", help="HOST:PORT")
    parser.add_argument(
        "--jwks-url", default="http://127.0.0.1:9002/.well-known/jwks.json", help="JWKS URL"
    )
    parser.add_argument("--issuer", default="http://127.0.0.1:8080", help="expected iss")
    parser.add_argument("--audience", default="demo-upstream", help="expected aud")
    parser.add_argument(
        "--jwks-max-age",
        type=float,
        default=JWKS_MAX_AGE_SECONDS,
        help="seconds a fetched JWKS is used: a removed key is refused at most this long after "
        "extauthz stopped publishing it",
    )
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s echo %(levelname)s %(message)s")
    log.info("echo upstream on %s, JWKS %s", args.listen, args.jwks_url)
    app = create_app(args.jwks_url, args.issuer, args.audience, jwks_max_age=args.jwks_max_age)
    web.run_app(app, host=host, port=int(port), print=None)


if __name__ == "__main__":
    main()
