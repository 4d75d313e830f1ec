"""JSON-RPC 2.0 as MCP uses it: one message parsed and checked, replies built.

Everything the transport answers travels as a JSON-RPC message, errors
included, so this module is the only place that knows the envelope.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "SERVER_ERROR",
    "SESSION_NOT_FOUND",
    "HttpError",
    "JsonRpcError",
    "Message",
    "encode",
    "error_response",
    "notification",
    "parse_message",
    "result_response",
]

#: Standard JSON-RPC error codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
#: Implementation-defined codes (-32000 to -32099) used by the transport.
SERVER_ERROR = -32000
SESSION_NOT_FOUND = -32001

RequestId = str | int

REQUEST, NOTIFICATION, RESPONSE = "request", "notification", "response"


class JsonRpcError(Exception):
    """Raise from a handler to answer the request with a JSON-RPC error.

    *code* is the JSON-RPC error code (e.g. ``METHOD_NOT_FOUND``), *message*
    a short description, *data* optional JSON data for the client.
    """

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        if type(code) is not int:
            raise TypeError(f"JSON-RPC error code must be an int, not {type(code).__name__}")
        if not isinstance(message, str):
            raise TypeError(f"JSON-RPC error message must be a str, not {type(message).__name__}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` member of a JSON-RPC error response."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error

    def __repr__(self) -> str:
        return f"JsonRpcError({self.code}, {self.message!r})"


class HttpError(Exception):
    """A request refused at the HTTP level: a status and a JSON-RPC error body."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        id: RequestId | None = None,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = JsonRpcError(code, message, data)
        self.id = id
        self.headers = dict(headers or {})

    def body(self) -> str:
        """The serialized JSON-RPC error response."""
        return error_response(self.id, self.error)


class Message:
    """One checked JSON-RPC message from the client.

    ``kind`` is ``"request"``, ``"notification"`` or ``"response"``; ``raw``
    is the decoded JSON object handed to the application's handler.
    """

    __slots__ = ("id", "kind", "method", "params", "raw")

    def __init__(self, raw: dict[str, Any], kind: str, id: RequestId | None, method: str | None) -> None:
        self.raw = raw
        self.kind = kind
        self.id = id
        self.method = method
        params = raw.get("params")
        self.params: dict[str, Any] = params if isinstance(params, dict) else {}

    def __repr__(self) -> str:
        return f"<Message {self.kind} method={self.method!r} id={self.id!r}>"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _is_id(value: Any) -> bool:
    return type(value) is int or type(value) is str


def _invalid(message: str, id: RequestId | None = None) -> HttpError:
    return HttpError(400, INVALID_REQUEST, f"Invalid Request: {message}", id=id)


def parse_message(body: bytes) -> Message:
    """Decode and check one JSON-RPC message; :class:`HttpError` (400) if it is not one.

    Malformed JSON is a parse error (-32700); valid JSON that is not exactly
    one JSON-RPC 2.0 message (batches included) is an invalid request (-32600).
    """
    try:
        text = body.decode("utf-8")
        if text.startswith("\ufeff"):
            raise ValueError("byte order mark")  # as json.loads refuses it
        value = _DECODER.decode(text)
        if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
            raise ValueError("lone surrogate")
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise HttpError(
            400,
            PARSE_ERROR,
            "Parse error: the body is not valid UTF-8 JSON (no NaN, Infinity, out-of-range numbers "
            "or unpaired surrogate escapes)",
        ) from None
    return check_message(value)


#: A ``\uD800``-``\uDFFF`` escape: only a body holding one can decode to a lone surrogate (checked then).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _finite_float(text: str) -> float:
    """A JSON number as a float; ValueError for one too large for it (``1e999`` would become infinity)."""
    number = float(text)
    if number in (math.inf, -math.inf):
        raise ValueError(f"number out of range: {text[:32]}")
    return number


#: Made once: ``json.loads`` with these hooks builds a decoder per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _has_lone_surrogate(value: Any) -> bool:
    """Whether any string in decoded JSON holds an unpaired surrogate, which no UTF-8 reply could carry."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def check_message(value: Any) -> Message:
    """Classify decoded JSON as a request, notification or response, or raise :class:`HttpError`."""
    if isinstance(value, list):
        raise _invalid("batches are not supported; send one JSON-RPC message per POST")
    if not isinstance(value, dict):
        raise _invalid("the body must be a JSON-RPC message object")
    has_id = "id" in value
    id_ = value.get("id")
    known_id = id_ if _is_id(id_) else None
    if value.get("jsonrpc") != "2.0":
        raise _invalid('"jsonrpc" must be "2.0"', known_id)
    if "params" in value and not isinstance(value["params"], dict):
        raise _invalid('"params" must be an object', known_id)
    if "method" in value:
        method = value["method"]
        if type(method) is not str or not method:
            raise _invalid('"method" must be a non-empty string', known_id)
        if "result" in value or "error" in value:
            raise _invalid("a message cannot be both a request and a response", known_id)
        if not has_id:
            return Message(value, NOTIFICATION, None, method)
        if known_id is None:
            raise _invalid('"id" must be a string or an integer')
        return Message(value, REQUEST, id_, method)
    if ("result" in value) == ("error" in value):
        raise _invalid('a message needs a "method", or exactly one of "result" and "error"', known_id)
    if "result" in value:
        if known_id is None or not isinstance(value["result"], dict):
            raise _invalid('a result needs a string or integer "id" and an object "result"', known_id)
    else:
        error = value["error"]
        if not (has_id and (id_ is None or known_id is not None)):
            raise _invalid('an error response needs an "id" (string, integer or null)')
        if not (isinstance(error, dict) and type(error.get("code")) is int and isinstance(error.get("message"), str)):
            raise _invalid('"error" must be an object with an integer "code" and a string "message"', known_id)
    return Message(value, RESPONSE, known_id, None)


def encode(message: Mapping[str, Any]) -> str:
    """Serialize a message compactly; ``TypeError``/``ValueError`` if it is not JSON data.

    Non-ASCII text stays as is, except that a string holding a surrogate
    (a lone one, e.g. a file name decoded with ``surrogateescape``) makes
    the whole message ASCII with ``\\u`` escapes: valid JSON that UTF-8 can
    carry, where the raw character would make the reply impossible to send.
    """
    text = _COMPACT.encode(message)
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return _COMPACT_ASCII.encode(message)


#: A surrogate code point: no UTF-8 text can hold one.
_SURROGATE = re.compile("[\ud800-\udfff]")
#: ``json.dumps`` with these options builds an encoder per call; these are made once (encoders keep no state).
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_COMPACT_ASCII = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def result_response(id: RequestId, result: Mapping[str, Any]) -> str:
    """A serialized success response."""
    return encode({"jsonrpc": "2.0", "id": id, "result": result})


def error_response(id: RequestId | None, error: JsonRpcError) -> str:
    """A serialized error response (``id`` null when the request's id is unknown)."""
    try:
        return encode({"jsonrpc": "2.0", "id": id, "error": error.to_dict()})
    except (TypeError, ValueError):  # unserializable error data: drop it rather than fail
        return encode({"jsonrpc": "2.0", "id": id, "error": {"code": error.code, "message": error.message}})


def notification(method: str, params: Mapping[str, Any] | None = None) -> str:
    """A serialized notification; ``TypeError``/``ValueError`` on bad arguments."""
    if type(method) is not str:
        raise TypeError(f"method must be a str such as 'notifications/tools/list_changed', not {type(method).__name__}")
    if not method:
        raise ValueError("method must be a non-empty str such as 'notifications/tools/list_changed'")
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a dict or None, not {type(params).__name__}")
        message["params"] = params
    return encode(message)
