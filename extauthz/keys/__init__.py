"""Signing keys: loaded from a directory, published as a JWKS, rotated (docs/architecture.md)."""
