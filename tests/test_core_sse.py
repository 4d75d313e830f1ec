"""Property tests: session_manager.sse against the independent WHATWG parser.

Every frame the encoder makes is fed to tests/sse_parser.py, whole and cut
at random byte boundaries (inside multi-byte UTF-8 sequences too), and must
come back as exactly one event with the same data, event type and id.

SSE cannot carry a CR: the spec turns CR, LF and CRLF alike into a line
end, and a multi-line ``data`` is joined back with LF. So a payload comes
back with every CR and CRLF turned into LF, and *identical* whenever it has
no CR: which is always the case for JSON text (``json.dumps`` escapes
control characters inside strings, and its only raw line break is LF).
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from session_manager import encode_comment, encode_event
from session_manager.sse import PING

from .sse_parser import SSEParser, parse

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces that break naive encoders: every line ending, blank lines, field
# look-alikes, a leading space (the parser strips exactly one), a BOM,
# NUL, Unicode line separators that str.splitlines() would split on but SSE
# must not, and characters of every UTF-8 length.
_TRICKY = [
    "\r", "\n", "\r\n", "\n\r", "\r\r", "\n\n", " ", "  ", ":", ": x", "data: ", "event: evil",
    "id: 1", "retry: 0", "\ufeff", "\x00", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85",
    "\u2028", "\u2029", "a", "é", "€", "😀", "{}", '"', "\\", "\t",
]
payloads = st.one_of(
    st.text(),
    st.lists(st.sampled_from(_TRICKY), max_size=12).map("".join),
    st.lists(st.one_of(st.sampled_from(_TRICKY), st.text(max_size=4)), max_size=10).map("".join),
)
# Legal values for the one-line fields: anything but CR, LF and NUL.
field_values = st.text(
    alphabet=st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)), max_size=20
) | st.lists(st.sampled_from([c for c in _TRICKY if not re.search("[\r\n\x00]", c)]), max_size=5).map("".join)
retries = st.integers(min_value=0, max_value=2**53)


def sse_normalised(text: str) -> str:
    """What an SSE client reads back for *text*: CR and CRLF become LF."""
    return re.sub(r"\r\n?", "\n", text)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, start = [], 0
    for point in points:
        chunks.append(data[start:point])
        start = point
    chunks.append(data[start:])
    return chunks


def parse_one(frame: bytes, chunks: list[bytes] | None = None):
    parser = SSEParser()
    for chunk in chunks if chunks is not None else [frame]:
        parser.feed(chunk)
    assert len(parser.events) == 1, f"{frame!r} gave {parser.events!r}"
    return parser.events[0], parser


def assert_is_one_frame(frame: bytes) -> None:
    assert type(frame) is bytes
    frame.decode("utf-8")  # always valid UTF-8
    assert frame.endswith(b"\n\n")
    # A frame ends at its only blank line: what counts frames in a chunk.
    assert frame.count(b"\n\n") == 1
    assert b"\r" not in frame


@PROPERTY
@given(
    data=payloads,
    event=st.none() | field_values,
    id_=st.none() | field_values,
    retry=st.none() | retries,
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
)
def test_any_payload_round_trips_as_exactly_one_event(data, event, id_, retry, cuts):
    frame = encode_event(data, event=event, id=id_, retry=retry)
    assert_is_one_frame(frame)
    for chunks in ([frame], split_at(frame, cuts), [frame[i : i + 1] for i in range(len(frame))]):
        got, parser = parse_one(frame, chunks)
        assert got.data == sse_normalised(data)
        assert got.event == (event or "message")  # an empty event type means "message"
        assert got.id == (id_ or None)
        assert parser.retry == retry
        assert parser.comments == []


@PROPERTY
@given(data=payloads.filter(lambda s: "\r" not in s))
def test_payload_without_cr_is_identical(data):
    got, _ = parse_one(encode_event(data))
    assert got.data == data


@SMALL
@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | payloads,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(payloads, children, max_size=4),
        max_leaves=12,
    ),
    indent=st.none() | st.integers(min_value=0, max_value=3),
    ensure_ascii=st.booleans(),
)
def test_any_json_message_is_identical(value, indent, ensure_ascii):
    message = json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)
    got, _ = parse_one(encode_event(message))
    assert got.data == message
    assert json.loads(got.data) == json.loads(message)


@PROPERTY
@given(
    frames=st.lists(st.tuples(payloads, st.none() | field_values), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=100_000), max_size=12),
)
def test_a_stream_of_frames_gives_one_event_per_frame(frames, cuts):
    stream = b"".join(encode_event(data, event=event) for data, event in frames)
    # Comments between frames (keep-alives) change nothing.
    stream = PING + stream.replace(b"\n\n", b"\n\n" + PING) + encode_comment("bye")
    events = parse(split_at(stream, cuts))
    assert [(e.data, e.event) for e in events] == [(sse_normalised(d), ev or "message") for d, ev in frames]


@SMALL
@given(id_=st.none() | field_values, retry=st.none() | retries)
def test_frame_without_data_dispatches_nothing(id_, retry):
    parser = SSEParser()
    parser.feed(encode_event(None, id=id_, retry=retry))
    assert parser.events == []
    assert parser.retry == retry
    assert parser.last_event_id == (id_ or "")
    # ...but the id sticks to the next event, as the spec says.
    parser.feed(encode_event("x"))
    assert [(e.data, e.id) for e in parser.events] == [("x", id_ or None)]


@PROPERTY
@given(text=payloads, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=6))
def test_comment_is_ignored_by_the_parser(text, cuts):
    comment = encode_comment(text)
    assert_is_one_frame(comment)
    parser = SSEParser()
    for chunk in split_at(comment + encode_event("after") + comment, cuts):
        parser.feed(chunk)
    assert [e.data for e in parser.events] == ["after"]
    assert parser.comments  # it was read as a comment, not as a field
    assert parser.last_event_id == "" and parser.retry is None


def test_ping_is_a_comment():
    assert_is_one_frame(PING)
    parser = SSEParser()
    parser.feed(PING * 3)
    assert parser.events == [] and len(parser.comments) == 3


def test_empty_payload_is_one_empty_event():
    got, _ = parse_one(encode_event(""))
    assert got.data == ""


def _with_forbidden(draw_value: str, bad: str, where: int) -> str:
    where %= len(draw_value) + 1
    return draw_value[:where] + bad + draw_value[where:]


@PROPERTY
@given(
    value=field_values,
    bad=st.sampled_from(["\r", "\n", "\r\n", "\x00"]),
    where=st.integers(min_value=0, max_value=50),
    field=st.sampled_from(["event", "id"]),
)
def test_event_or_id_with_cr_lf_or_nul_is_rejected(value, bad, where, field):
    with pytest.raises(ValueError) as excinfo:
        encode_event("{}", **{field: _with_forbidden(value, bad, where)})
    assert field in str(excinfo.value)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"data": b"{}"}, TypeError, ["data", "str", "bytes"]),
        ({"data": 1}, TypeError, ["data", "str", "int"]),
        ({"data": {"a": 1}}, TypeError, ["data", "str", "dict"]),
        ({"data": ["x"]}, TypeError, ["data", "str", "list"]),
        ({"data": "x", "event": 1}, TypeError, ["event", "str"]),
        ({"data": "x", "event": b"e"}, TypeError, ["event", "str"]),
        ({"data": "x", "id": 7}, TypeError, ["id", "str"]),
        ({"data": "x", "id": b"7"}, TypeError, ["id", "str"]),
        ({"data": "x", "retry": -1}, ValueError, ["retry"]),
        ({"data": "x", "retry": -(2**70)}, ValueError, ["retry"]),
        ({"data": "x", "retry": 1.5}, ValueError, ["retry"]),
        ({"data": "x", "retry": 1.0}, ValueError, ["retry"]),
        ({"data": "x", "retry": "100"}, ValueError, ["retry"]),
        ({"data": "x", "retry": True}, ValueError, ["retry"]),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, words):
    data = kwargs.pop("data")
    with pytest.raises(error) as excinfo:
        encode_event(data, **kwargs)
    for word in words:
        assert word in str(excinfo.value)


@SMALL
@given(value=st.one_of(st.integers(max_value=-1), st.floats(), st.text(max_size=5), st.booleans()))
def test_any_bad_retry_is_a_value_error(value):
    with pytest.raises(ValueError):
        encode_event("x", retry=value)


def test_lone_surrogate_is_rejected_with_a_value_error():
    # Not UTF-8 encodable: must fail loudly (UnicodeEncodeError is a ValueError), not emit garbage.
    with pytest.raises(ValueError):
        encode_event("\ud800")
    with pytest.raises(ValueError):
        encode_event("x", event="\udfff")


def test_payload_cannot_inject_fields_or_events():
    evil = "a\n\nevent: evil\nid: 666\nretry: 1\ndata: injected\r\n\r\n: c\rb"
    events = parse([encode_event(evil, event="ok", id="1")])
    assert [(e.data, e.event, e.id) for e in events] == [(sse_normalised(evil), "ok", "1")]


def test_retry_survives():
    parser = SSEParser()
    parser.feed(encode_event("x", retry=2500))
    assert parser.retry == 2500

