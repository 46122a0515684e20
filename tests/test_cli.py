"""The command line's arguments (extauthz.cli.build_parser), parsed without a server."""

from __future__ import annotations

import pytest

from extauthz.cli import build_parser, parse_lifetime


@pytest.mark.parametrize("action", ["get", "revoke"])
def test_a_sid_that_starts_with_a_dash_is_given_as_sid_equals(action: str) -> None:
    args = build_parser().parse_args(["sessions", action, "--sid=-abc"])
    assert args.sid == "-abc"


def test_with_a_space_the_same_sid_reads_as_an_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sessions", "revoke", "--sid", "-abc"])
    assert "--sid: expected one argument" in capsys.readouterr().err


@pytest.mark.parametrize("action", ["get", "revoke"])
def test_the_sid_help_says_to_write_sid_equals(
    action: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sessions", action, "--help"])
    assert "--sid=ID" in capsys.readouterr().out


# -- extauthz apikeys ------------------------------------------------------------------------------


def test_apikeys_create_reads_sub_name_scopes_and_expires() -> None:
    args = build_parser().parse_args(
        ["apikeys", "create", "--sub", "svc", "--name", "reports", "--scope", "a", "--scope", "b",
         "--expires", "90d"]
    )  # fmt: skip
    assert (args.sub, args.name, args.scope, args.expires) == (
        "svc",
        "reports",
        ["a", "b"],
        90 * 86400,
    )
    # without --expires the node's api_keys.default_lifetime_days applies
    assert (
        build_parser().parse_args(["apikeys", "create", "--sub", "s", "--name", "n"]).expires
        is None
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90d", 90 * 86400), ("12h", 43200), ("30m", 1800), ("45s", 45), ("2D", 172800)],
)
def test_parse_lifetime(text: str, seconds: int) -> None:
    assert parse_lifetime(text) == seconds


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["apikeys", "create", "--name", "n"], "the following arguments are required: --sub"),
        (["apikeys", "create", "--sub", "s"], "the following arguments are required: --name"),
        (
            ["apikeys", "create", "--sub", "s", "--name", "n", "--expires", "90"],
            "expected e.g. 90d",
        ),
        (
            ["apikeys", "create", "--sub", "s", "--name", "n", "--expires", "1y"],
            "expected e.g. 90d",
        ),
        (
            ["apikeys", "create", "--sub", "s", "--name", "n", "--expires=-5d"],
            "expected e.g. 90d",
        ),
        (
            ["apikeys", "create", "--sub", "s", "--name", "n", "--expires", "0d"],
            "at least one second",
        ),
        (
            ["apikeys", "create", "--sub", "s", "--name", "n", "--expires", "9999999d"],
            "expected e.g.",
        ),
        (["apikeys", "list"], "the following arguments are required: --sub"),
        (["apikeys", "revoke"], "the following arguments are required: --id"),
    ],
)
def test_apikeys_argument_errors(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert error in capsys.readouterr().err


def test_a_key_id_that_starts_with_a_dash_is_given_as_id_equals() -> None:
    assert build_parser().parse_args(["apikeys", "revoke", "--id=-abc"]).id == "-abc"
