"""An upstream whose response headers the test chooses: the session-update tests' upstream.

Run as ``python tests/support/scripted_upstream.py PORT``. Every request answers 200 with
JSON ``{"claims": <the payload of the request's JWT, not verified>, "path": ...}`` (the echo
upstream verifies JWTs; this one only reports what the gateway sent), and with these response
headers, each taken from the query string (repeatable):

* ``update=<value>``: an ``x-extauthz-session-update`` header with that value
* ``cookie=<value>``: a ``Set-Cookie`` header with that value
* ``leak=1``: the request's ``Authorization`` (the JWT) and ``x-extauthz-leak: 1`` copied
  into the response, as a careless upstream might
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

from aiohttp import web

UPDATE_HEADER = "x-extauthz-session-update"


def _claims(authorization: str) -> Any:
    token = authorization.partition(" ")[2]
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None


async def answer(request: web.Request) -> web.Response:
    headers: list[tuple[str, str]] = [
        *((UPDATE_HEADER, v) for v in request.query.getall("update", [])),
        *(("Set-Cookie", v) for v in request.query.getall("cookie", [])),
    ]
    authorization = request.headers.get("Authorization", "")
    if request.query.get("leak") == "1":
        headers += [("Authorization", authorization), ("x-extauthz-leak", "1")]
    body = {"claims": _claims(authorization), "path": request.path}
    response = web.Response(text=json.dumps(body), content_type="application/json")
    for name, value in headers:
        response.headers.add(name, value)
    return response


def main() -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)


if __name__ == "__main__":
    main()
