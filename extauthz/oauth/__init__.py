"""OAuth 2.0 (RFC 6749): the client registry, grants, tokens and the authorization server."""
