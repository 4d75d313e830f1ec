"""Session ids on a command line: minted ids never look like an option, and examples/notify.py takes any id.

An id starting with ``-`` (1 in 32 of ``secrets.token_urlsafe``'s) made
``notify.py --session -x...`` fail as an unknown option (issue 14).
"""

from __future__ import annotations

import base64
import string

import pytest

from examples.notify import glue_values, parse_args
from session_manager.wsgi._session_ids import is_minted, mint_session_id

#: Enough draws to see every first character (each misses with odds below e**-80).
DRAWS = 5000
ALNUM = frozenset(string.ascii_letters + string.digits)
URLSAFE = string.ascii_letters + string.digits + "-_"


def test_minted_session_ids_never_look_like_a_command_line_option() -> None:
    ids = [mint_session_id() for _ in range(DRAWS)]
    assert len(set(ids)) == DRAWS
    for sid in ids:
        assert len(sid) == 43 and sid[0] in ALNUM and is_minted(sid), sid
        assert len(base64.urlsafe_b64decode(sid + "=")) == 32, sid  # still 32 random bytes, base64 as before
    assert {sid[0] for sid in ids} == ALNUM  # only "-" and "_" are left out, no other character


def test_is_minted_matches_exactly_the_ids_minted() -> None:
    sid = mint_session_id()
    for char in URLSAFE:
        # First character: alphanumeric only.
        assert is_minted(char + sid[1:]) == (char in ALNUM), char
        # Last character: the canonical base64 of 32 bytes (its 2 padding bits are zero), as minted.
        variant = sid[:-1] + char
        canonical = base64.urlsafe_b64encode(base64.urlsafe_b64decode(variant + "=")).decode().rstrip("=")
        assert is_minted(variant) == (canonical == variant), char
    for bad in ("", sid[:-1], sid + "A", sid[:-1] + ":", "-" + sid[1:], "_" + sid[1:], sid[:10] + "é" + sid[11:]):
        assert not is_minted(bad), bad


ARGS = ["--redis", "redis://127.0.0.1:1/0", "--method", "notifications/message"]


@pytest.mark.parametrize(
    ("words", "sessions"),
    [
        (["--session", "-abc"], ["-abc"]),
        (["--session=-abc"], ["-abc"]),
        (["--session", "--abc", "--session", "_x", "--session", "plain"], ["--abc", "_x", "plain"]),
        (["--session", "-h-is-an-id-here-too"], ["-h-is-an-id-here-too"]),
    ],
)
def test_notify_script_takes_session_ids_starting_with_a_dash(words: list[str], sessions: list[str]) -> None:
    assert parse_args(ARGS + words).session == sessions


MISSING_VALUE = [["--session", "--method", "m"], ["--session", "--broadcast"], ["--session", "-h"], ["--session"]]


@pytest.mark.parametrize("words", MISSING_VALUE)
def test_notify_script_still_reports_a_missing_value(words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """An option of the script after ``--session`` is not taken for an id: argparse says the id is missing."""
    with pytest.raises(SystemExit) as exited:
        parse_args(["--redis", "redis://127.0.0.1:1/0", *words])
    assert exited.value.code == 2
    assert "argument --session: expected one argument" in capsys.readouterr().err


def test_glue_values_only_joins_an_option_with_its_value() -> None:
    words = ["--broadcast", "--method", "-m", "--params", "{}", "-x", "--redis"]
    assert glue_values(words) == ["--broadcast", "--method=-m", "--params={}", "-x", "--redis"]
