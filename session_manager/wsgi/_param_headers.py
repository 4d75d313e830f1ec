"""``Mcp-Param-*`` headers (2026-07-28): tool arguments a client mirrors into HTTP headers.

A tool's input schema may mark a string, integer or boolean property with
``"x-mcp-header": "<Name>"``; a client calling that tool then sends the
argument's value in the header ``Mcp-Param-<Name>`` too, so that
intermediaries can route on it without reading the body. The server must
refuse (400, -32020) a call whose headers do not mirror its arguments: a
header without its argument, an argument without its header, or values
that differ. The annotations come from the handler's own ``tools/list``
(:class:`ToolHeaders` learns them in each process).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["LEARNED_FOR", "Annotation", "ToolHeaders", "annotated", "mismatch"]

#: ``(argument path, header name, JSON type)`` of one annotated property.
Annotation = tuple[tuple[str, ...], str, str]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 field-name characters
_DECIMAL = re.compile(r"-?[0-9]+(\.0+)?")
_TYPES = ("string", "integer", "boolean")
#: Most ``tools/list`` pages read to learn the annotations.
_MAX_PAGES = 20
#: Seconds a learned tool list is trusted.
LEARNED_FOR = 10.0
#: Least seconds between two learns caused by a tool the list did not have.
_RELEARN_UNKNOWN = 1.0


def annotated(schema: object) -> list[Annotation] | None:
    """The annotated properties of an input schema, along ``properties`` chains; None if an annotation is invalid.

    Invalid: not an RFC 9110 token, on a property that is not a string,
    integer or boolean, or a name used twice. A tool with such a schema is
    not checked (a conforming client drops it and sends no header).
    """
    found: list[Annotation] = []
    stack: list[tuple[tuple[str, ...], object]] = [((), schema)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, dict):
            continue
        token = node.get("x-mcp-header")
        if token is not None and path:
            if type(token) is not str or not _TOKEN.fullmatch(token) or node.get("type") not in _TYPES:
                return None
            found.append((path, token, node["type"]))
        properties = node.get("properties")
        if isinstance(properties, dict):
            stack.extend(((*path, name), sub) for name, sub in properties.items())
    names = [token.lower() for _, token, _ in found]
    return None if len(set(names)) != len(names) else found


def _rendered(value: object) -> str | None:
    """An argument as a client renders it in a header (None: not a scalar, no header)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def _same_integer(got: str | None, value: object) -> bool:
    if got is None or not _DECIMAL.fullmatch(got) or isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return float(value).is_integer() and int(got.split(".")[0]) == int(value)


def _value_at(arguments: Mapping[str, Any], path: tuple[str, ...]) -> object:
    node: object = arguments
    for name in path:
        if not isinstance(node, dict):
            return None
        node = node.get(name)
    return node


def mismatch(
    found: list[Annotation], arguments: Mapping[str, Any], header: Callable[[str], str | None],
    decode: Callable[[str | None], str | None],
) -> str | None:
    """Why the ``Mcp-Param-*`` headers do not mirror *arguments* (None: they do)."""
    for path, token, kind in found:
        name = f"Mcp-Param-{token}"
        raw, value = header(name), _value_at(arguments, path)
        rendered = None if value is None else _rendered(value)
        if rendered is None:
            if raw is not None:
                return f"the {name} header has no argument {'.'.join(path)!r} to mirror"
            continue
        if raw is None:
            return f"the {name} header is missing for argument {'.'.join(path)!r}"
        got = decode(raw)
        if kind == "integer" and _same_integer(got, value):
            continue  # integers compare by value: "42" mirrors 42.0
        if got != rendered:
            return f"the {name} header does not match argument {'.'.join(path)!r}"
    return None


class ToolHeaders:
    """The annotated properties of each tool, learned from the handler's ``tools/list`` (per process).

    What is learned is kept :data:`LEARNED_FOR` seconds, and learned again
    sooner when a call names a tool the list did not have (at most once a
    second) or after :meth:`forget` (a list change this process raised): a
    tool list changed elsewhere is checked within that time. A list that
    could not be read is never kept.
    """

    __slots__ = ("_generation", "_learned", "_lock", "_tools")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tools: dict[str, list[Annotation] | None] | None = None
        self._learned = 0.0
        self._generation = 0  # bumped by forget(): a learn that started before it is not kept

    def learn(self, pages: Callable[[str | None], Mapping[str, Any]]) -> dict[str, list[Annotation] | None]:
        """Read every page of ``tools/list`` (``pages(cursor)``, which raises if it cannot); keep and return it."""
        generation = self._generation
        tools: dict[str, list[Annotation] | None] = {}
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page = pages(cursor)
            for tool in page.get("tools") or ():
                if isinstance(tool, dict) and type(tool.get("name")) is str:
                    tools[tool["name"]] = annotated(tool.get("inputSchema"))
            cursor = page.get("nextCursor")
            if type(cursor) is not str:
                break
        with self._lock:
            if generation == self._generation:
                self._tools, self._learned = tools, time.monotonic()
        return tools

    def forget(self) -> None:
        """The tool list changed: learn it again on the next call."""
        with self._lock:
            self._tools = None
            self._generation += 1

    def of(self, tool: str, pages: Callable[[str | None], Mapping[str, Any]]) -> list[Annotation] | None:
        """The annotations of *tool* (None: nothing to check), learning the list when it is unknown or old."""
        tools, age = self._tools, time.monotonic() - self._learned
        if tools is None or age > LEARNED_FOR or (tool not in tools and age > _RELEARN_UNKNOWN):
            tools = self.learn(pages)
        return tools.get(tool)
