"""The authentication service: login, logout and the session endpoint under ``/auth/*``,
with its users, cookies, same-site checks and rate limits (docs/authentication.md).
"""
