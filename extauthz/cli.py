"""The ``extauthz`` command line.

``serve`` runs the service; ``sessions``, ``apikeys``, ``status`` call a running node's admin
API over gRPC (``--target``, default ``$EXTAUTHZ_TARGET`` or ``127.0.0.1:9001``) with the admin
token of ``--admin-token-file`` (default ``$EXTAUTHZ_ADMIN_TOKEN_FILE``); ``keys generate``
writes a signing key; ``users`` manages a file-backed user store; ``clients`` registers OAuth
clients (in the store of ``--config``, or through a node's admin API with ``--target``);
``envoy-config`` prints an Envoy bootstrap for the settings of ``--config``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any

from extauthz import __version__
from extauthz.errors import ExtauthzError


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    from extauthz.server.footprint import prefer_native_resolver
    from extauthz.settings import load_settings

    prefer_native_resolver()  # before gRPC is imported here or in a worker (which inherits it)

    _configure_logging(args.log_level)
    settings = load_settings(args.config)
    if settings.worker_count > 1:  # a supervisor and its worker processes
        from extauthz.server.worker_wiring import serve_workers

        return serve_workers(settings, args.log_level)
    from extauthz.server.app import serve  # the node: not in a supervisor, which serves nothing

    return asyncio.run(serve(settings))


def _cmd_envoy_config(args: argparse.Namespace) -> int:
    from extauthz.check.context import check_headers
    from extauthz.envoy_config import SettingsValues
    from extauthz.envoy_config.command import run
    from extauthz.settings import load_settings

    settings = load_settings(args.config)
    values = SettingsValues(
        grpc_listen=settings.server.grpc_listen, http_listen=settings.server.http_listen,
        cookie_name=settings.session.cookie_name, jwt_header=settings.jwt.header,
        session_update_header=settings.session_updates.header, workers=settings.worker_count,
        check_headers=check_headers(settings.api_keys.header),
    )  # fmt: skip
    return run(args, values)


def _admin_metadata(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The metadata that carries the admin token of ``--admin-token-file``."""
    from extauthz.server.admin import load_admin_token

    metadata: list[tuple[str, str]] = []
    if args.admin_token_file:
        token = load_admin_token(args.admin_token_file)  # SettingsError: unreadable, malformed
        metadata.append(("authorization", f"Bearer {token}"))
    return metadata


def _admin_channel(args: argparse.Namespace) -> tuple[Any, list[tuple[str, str]]]:
    """A channel to ``--target`` and the metadata that carries the admin token."""
    import grpc

    return grpc.insecure_channel(args.target), _admin_metadata(args)


def _stub(args: argparse.Namespace) -> tuple[Any, Any, list[tuple[str, str]]]:
    from extauthz._proto.extauthz.v1 import admin_pb2_grpc

    channel, metadata = _admin_channel(args)
    return (
        admin_pb2_grpc.SessionAdminStub(channel),
        admin_pb2_grpc.StatusStub(channel),
        metadata,
    )


def _print_message(message: Any, *, with_defaults: bool = False) -> None:
    from google.protobuf import json_format

    as_dict = json_format.MessageToDict(message, always_print_fields_with_no_presence=with_defaults)
    print(json.dumps(as_dict, indent=2, sort_keys=True))


def _cmd_sessions(args: argparse.Namespace) -> int:
    from google.protobuf.struct_pb2 import Struct

    from extauthz._proto.extauthz.v1 import admin_pb2

    sessions, _, metadata = _stub(args)
    kw = {"metadata": metadata, "timeout": args.timeout}
    if args.action == "create":
        data = Struct()
        if args.data:
            try:
                parsed = json.loads(args.data)
            except json.JSONDecodeError as exc:
                raise SystemExit(f"extauthz: --data is not JSON: {exc}") from None
            if not isinstance(parsed, dict):
                raise SystemExit("extauthz: --data must be a JSON object")
            data.update(parsed)
        reply = sessions.CreateSession(
            admin_pb2.CreateSessionRequest(
                sub=args.sub, scopes=args.scope, roles=args.role, data=data
            ),
            **kw,
        )
        print(reply.access_token)
        print(f"sid={reply.session.sid} sub={reply.session.sub}", file=sys.stderr)
    elif args.action == "get":
        _print_message(sessions.GetSession(admin_pb2.GetSessionRequest(sid=args.sid), **kw))
    elif args.action == "revoke":
        if args.sid:
            reply = sessions.RevokeSession(admin_pb2.RevokeSessionRequest(sid=args.sid), **kw)
            print("revoked" if reply.revoked else "not found")
            return 0 if reply.revoked else 1
        reply = sessions.RevokeSubjectSessions(
            admin_pb2.RevokeSubjectSessionsRequest(sub=args.sub), **kw
        )
        print(f"revoked {reply.revoked}")
    elif args.action == "list":
        _print_message(sessions.ListSessions(admin_pb2.ListSessionsRequest(sub=args.sub), **kw))
    return 0


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_lifetime(text: str) -> int:
    """``--expires``: a whole number and a unit, ``s``, ``m``, ``h`` or ``d`` (``90d``); the
    seconds it means. :raises argparse.ArgumentTypeError: anything else, or zero."""
    number, unit = text.strip()[:-1], text.strip()[-1:].lower()
    if unit not in _DURATION_UNITS or not number.isdigit() or len(number) > 6:
        raise argparse.ArgumentTypeError(f"expected e.g. 90d, 12h, 30m or 60s, got {text!r}")
    seconds = int(number) * _DURATION_UNITS[unit]
    if seconds < 1:
        raise argparse.ArgumentTypeError("an API key must live at least one second")
    return seconds


def _cmd_apikeys(args: argparse.Namespace) -> int:
    from extauthz._proto.extauthz.v1 import admin_pb2, admin_pb2_grpc

    channel, metadata = _admin_channel(args)
    keys = admin_pb2_grpc.ApiKeyAdminStub(channel)
    kw = {"metadata": metadata, "timeout": args.timeout}
    if args.action == "create":
        request = admin_pb2.CreateApiKeyRequest(
            sub=args.sub, name=args.name, scopes=args.scope, lifetime_seconds=args.expires or 0
        )
        reply = keys.CreateApiKey(request, **kw)
        print(reply.api_key)  # the only time the key is shown
        print(
            f"key_id={reply.key.key_id} sub={reply.key.sub} "
            f"expires_at={reply.key.expires_at.ToJsonString()} (the key is not shown again)",
            file=sys.stderr,
        )
    elif args.action == "list":
        _print_message(keys.ListApiKeys(admin_pb2.ListApiKeysRequest(sub=args.sub), **kw))
    elif args.action == "revoke":
        reply = keys.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(key_id=args.id), **kw)
        print("revoked" if reply.revoked else "not found")
        return 0 if reply.revoked else 1
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from extauthz._proto.extauthz.v1 import admin_pb2

    _, status, metadata = _stub(args)
    request = admin_pb2.GetStatusRequest()
    reply = status.GetStatus(request, metadata=metadata, timeout=args.timeout)
    # zeros matter here (no bypasses, channel down for 0 s): print every field
    _print_message(reply, with_defaults=True)
    if reply.cache_channel == "down":
        print(
            f"extauthz: the cache's invalidation channel has been down for "
            f"{reply.cache_channel_down_seconds:.1f} s (lookups go to the store)",
            file=sys.stderr,
        )
    if (
        reply.HasField("clock_offset_seconds")
        and abs(reply.clock_offset_seconds) > reply.clock_offset_max_seconds
    ):
        print(
            f"extauthz: clock offset {reply.clock_offset_seconds:+.3f} s from the store is "
            f"outside the contract (+-{reply.clock_offset_max_seconds:g} s)",
            file=sys.stderr,
        )
    return 0


def _cmd_users_mfa(args: argparse.Namespace) -> int:
    """``users mfa list|reset USER`` through the node's admin API (``FactorAdmin``): the node
    holds the factor store and the sessions a reset revokes."""
    from extauthz._proto.extauthz.v1 import admin_pb2, admin_pb2_grpc

    channel, metadata = _admin_channel(args)
    factors = admin_pb2_grpc.FactorAdminStub(channel)
    kw = {"metadata": metadata, "timeout": args.timeout}
    if args.mfa_action == "list":
        reply = factors.ListFactors(admin_pb2.ListFactorsRequest(user=args.user), **kw)
        for f in reply.factors:
            used = f.last_used_at.ToJsonString() if f.HasField("last_used_at") else "-"
            left = f"\tcodes_left={f.codes_left}" if f.kind == "recovery" else ""
            print(f"{f.id}\t{f.kind}\tconfirmed={str(f.confirmed).lower()}\t"
                  f"created={f.created_at.ToJsonString()}\tlast_used={used}{left}")
    else:
        done = factors.ResetFactors(admin_pb2.ResetFactorsRequest(user=args.user), **kw)
        print(f"reset {args.user}: factors_removed={done.factors_removed} "
              f"sessions_revoked={done.sessions_revoked}")
    return 0


def _add_users_mfa(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mfa = actions.add_parser("mfa", help="list or reset a user's second factors (admin API)")
    mfa_actions = mfa.add_subparsers(dest="mfa_action", required=True)
    for name, text in (("list", "list a user's factors (never a secret or a code)"),
                       ("reset", "remove a user's factors and revoke their sessions")):
        action = mfa_actions.add_parser(name, help=text)
        action.add_argument("user")
        _client_options(action)
    mfa.set_defaults(func=_cmd_users_mfa)


def _cmd_keys(args: argparse.Namespace) -> int:
    from extauthz.keys.keyring import generate_key

    path = generate_key(args.dir, args.alg)
    print(path)
    return 0


def _cmd_clients(args: argparse.Namespace) -> int:
    from extauthz.oauth.clients_cli import admin_registry, run_clients_command, store_registry

    if args.target:
        registry = admin_registry(args.target, _admin_metadata(args), args.timeout)
    else:
        from extauthz.server.store_wiring import standalone_client_store
        from extauthz.settings import load_settings

        registry = store_registry(standalone_client_store(load_settings(args.config)))
    return run_clients_command(args, registry)


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        default=os.environ.get("EXTAUTHZ_TARGET", "127.0.0.1:9001"),
        help="gRPC address of a running node (default: $EXTAUTHZ_TARGET or 127.0.0.1:9001)",
    )
    parser.add_argument(
        "--admin-token-file",
        default=os.environ.get("EXTAUTHZ_ADMIN_TOKEN_FILE"),
        help="the file holding the admin token, as the node's admin.token_file (default: "
        "$EXTAUTHZ_ADMIN_TOKEN_FILE, the variable that sets admin.token_file for serve)",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds")


TOKEN_HINT = (
    "extauthz: the admin API needs the node's admin token: --admin-token-file FILE or "
    "EXTAUTHZ_ADMIN_TOKEN_FILE=FILE (`make demo` writes .demo/admin-token)"
)
# a session id is URL-safe base64 and may start with "-", which argparse reads as an option
SID_HELP = "the session id; write --sid=ID (an id may start with '-')"


def build_parser(*, serve_only: bool = False) -> argparse.ArgumentParser:
    """The command line's parser. ``serve_only``: just the ``serve`` subcommand, for a command
    line that starts with it (a serving process then never loads the modules the other
    subcommands' parsers come from: ~0.7 MiB resident, issue 13)."""
    parser = argparse.ArgumentParser(prog="extauthz", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"extauthz {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC and HTTP servers")
    serve.add_argument("--config", help="settings TOML file (EXTAUTHZ_* variables override it)")
    serve.add_argument("--log-level", default=os.environ.get("EXTAUTHZ_LOG_LEVEL", "info"))
    serve.set_defaults(func=_cmd_serve)
    if serve_only:
        return parser

    sessions = sub.add_parser("sessions", help="create, inspect and revoke sessions")
    actions = sessions.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a session; prints the token once")
    create.add_argument("--sub", required=True)
    create.add_argument("--scope", action="append", default=[])
    create.add_argument("--role", action="append", default=[])
    create.add_argument("--data", help="session data, a JSON object")
    get = actions.add_parser("get", help="show one session")
    get.add_argument("--sid", required=True, help=SID_HELP)
    revoke = actions.add_parser("revoke", help="revoke one session, or every session of a subject")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--sid", help=SID_HELP)
    which.add_argument("--sub")
    listing = actions.add_parser("list", help="list a subject's sessions")
    listing.add_argument("--sub", required=True)
    for p in (create, get, revoke, listing):
        _client_options(p)
    sessions.set_defaults(func=_cmd_sessions)

    apikeys = sub.add_parser("apikeys", help="API keys for machine clients")
    key_actions = apikeys.add_subparsers(dest="action", required=True)
    create = key_actions.add_parser("create", help="create an API key; prints the key once")
    create.add_argument("--sub", required=True, help="the subject the key acts as")
    create.add_argument("--name", required=True, help="what the key is for (shown in lists)")
    create.add_argument("--scope", action="append", default=[])
    create.add_argument(
        "--expires",
        type=parse_lifetime,
        help="lifetime, e.g. 90d, 12h (default: api_keys.default_lifetime_days; at most "
        "api_keys.max_lifetime_days)",
    )
    listing = key_actions.add_parser("list", help="list a subject's API keys (never the keys)")
    listing.add_argument("--sub", required=True)
    revoke = key_actions.add_parser("revoke", help="revoke one API key by its id")
    revoke.add_argument("--id", required=True, help="the key id; write --id=ID (an id may "
                        "start with '-')")  # fmt: skip
    for p in (create, listing, revoke):
        _client_options(p)
    apikeys.set_defaults(func=_cmd_apikeys)

    status = sub.add_parser(
        "status",
        help="show a node's version, store strategy, keys, push channel and clock offset",
    )
    _client_options(status)
    status.set_defaults(func=_cmd_status)

    keys = sub.add_parser("keys", help="signing keys")
    key_actions = keys.add_subparsers(dest="action", required=True)
    generate = key_actions.add_parser("generate", help="write a new private key (PEM)")
    generate.add_argument("--dir", required=True)
    generate.add_argument("--alg", default="ES256", choices=["ES256", "EdDSA", "RS256"])
    keys.set_defaults(func=_cmd_keys)

    try:
        from extauthz.login.users.cli import add_users_parser
    except ImportError:
        pass
    else:
        add_users_parser(sub, _add_users_mfa)
    from extauthz.oauth.clients_cli import add_clients_parser

    add_clients_parser(sub).set_defaults(func=_cmd_clients)
    from extauthz.envoy_config import add_parser as add_envoy_config_parser

    add_envoy_config_parser(sub).set_defaults(func=_cmd_envoy_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(serve_only=argv[:1] == ["serve"]).parse_args(argv)
    try:
        return int(args.func(args))
    except ExtauthzError as exc:
        print(f"extauthz: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a gRPC error from a client command
        import grpc

        if isinstance(exc, grpc.RpcError):
            print(f"extauthz: {exc.code().name}: {exc.details()}", file=sys.stderr)
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED and not args.admin_token_file:
                print(TOKEN_HINT, file=sys.stderr)
            return 1
        raise
