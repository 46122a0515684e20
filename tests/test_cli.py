"""The command line's arguments (extauthz.cli.build_parser), parsed without a server."""

from __future__ import annotations

import pytest

from extauthz.cli import build_parser


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
