"""An independent SSE parser written from the WHATWG HTML spec, for tests.

It follows "9.2.6 Interpreting an event stream" step by step and shares no
code with session_manager.sse, so the encoder is checked against the spec,
not against itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass
class Event:
    data: str
    event: str = "message"
    id: str | None = None


class SSEParser:
    """Incremental parser: feed bytes, collect dispatched events."""

    def __init__(self) -> None:
        self._buffer = ""
        self._pending_cr = False
        self._decoder_buf = b""
        self._first = True
        self.data = ""
        self.event_type = ""
        self.last_event_id = ""
        self.retry: int | None = None
        self.comments: list[str] = []
        self.events: list[Event] = []

    def feed(self, chunk: bytes) -> list[Event]:
        start = len(self.events)
        self._decoder_buf += chunk
        try:
            text = self._decoder_buf.decode("utf-8")
            self._decoder_buf = b""
        except UnicodeDecodeError as exc:  # incomplete multi-byte sequence at the end
            text = self._decoder_buf[: exc.start].decode("utf-8")
            self._decoder_buf = self._decoder_buf[exc.start :]
        if self._first and text:
            text = text.removeprefix("\ufeff")
            self._first = False
        for ch in text:
            if self._pending_cr:
                self._pending_cr = False
                if ch == "\n":
                    continue  # CRLF: the CR already ended the line
            if ch == "\r":
                self._pending_cr = True
                self._line(self._buffer)
                self._buffer = ""
            elif ch == "\n":
                self._line(self._buffer)
                self._buffer = ""
            else:
                self._buffer += ch
        return self.events[start:]

    def _line(self, line: str) -> None:
        if line == "":
            self._dispatch()
            return
        if line.startswith(":"):
            self.comments.append(line[1:])
            return
        if ":" in line:
            field, value = line.split(":", 1)
            value = value.removeprefix(" ")
        else:
            field, value = line, ""
        if field == "event":
            self.event_type = value
        elif field == "data":
            self.data += value + "\n"
        elif field == "id":
            if "\x00" not in value:
                self.last_event_id = value
        elif field == "retry" and value and all("0" <= c <= "9" for c in value):
            self.retry = int(value)

    def _dispatch(self) -> None:
        if self.data == "":
            self.event_type = ""
            return
        data = self.data.removesuffix("\n")
        self.events.append(Event(data=data, event=self.event_type or "message", id=self.last_event_id or None))
        self.data = ""
        self.event_type = ""


def parse(chunks: Iterable[bytes]) -> list[Event]:
    parser = SSEParser()
    for chunk in chunks:
        parser.feed(chunk)
    return parser.events


def iter_events(chunks: Iterable[bytes]) -> Iterator[Event]:
    parser = SSEParser()
    for chunk in chunks:
        yield from parser.feed(chunk)
