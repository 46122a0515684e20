"""The response path: what an upstream's response may ask of its session on its way back
through Envoy (docs/session-updates.md).

* :mod:`extauthz.response.updates` -- the protocol: the update header's value (a JSON Merge
  Patch of the session's ``data``, RFC 7396, or an action), its limits and the per-upstream
  allowlist. Pure functions, no I/O.
* :mod:`extauthz.response.processor` -- applies one response's request to the session store
  and says which response headers to remove and add.
* :mod:`extauthz.response.ext_proc_adapter` -- the one module of this package that speaks
  Envoy's ``envoy.service.ext_proc.v3`` protobuf.
"""
