"""McpOptions: every option of the MCP transport, its default, checked once.

One frozen object is built per transport and shared by every entry point
(:class:`~session_manager.wsgi.McpApp`, and the Flask blueprints built on
it), so an option is defined, defaulted and validated in exactly one place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from werkzeug.wrappers import Request

from .. import __version__
from .._validate import positive_int, positive_seconds
from ..stream import DEFAULT_KEEPALIVE, DEFAULT_MAX_BYTES, DEFAULT_MAXSIZE, StreamController
from ._checks import Allowlist
from ._request_state import DEFAULT_STATE_TTL, StateSealer

__all__ = [
    "DEFAULT_ALLOWED_HOSTS",
    "DEFAULT_ALLOWED_ORIGINS",
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_HANDLERS",
    "DEFAULT_MAX_LISTEN_STREAMS",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_MAX_SESSIONS_PER_PRINCIPAL",
    "DEFAULT_MAX_SESSION_INFO",
    "DEFAULT_RETRY",
    "McpOptions",
    "Principal",
]

_LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]")
#: Hosts accepted by default (any port): the loopback names of a local server.
DEFAULT_ALLOWED_HOSTS: tuple[str, ...] = _LOCAL_NAMES
#: Origins accepted by default (any port): pages served from the local machine.
DEFAULT_ALLOWED_ORIGINS: tuple[str, ...] = tuple(f"{s}://{h}" for s in ("http", "https") for h in _LOCAL_NAMES)
#: Largest request body accepted (bytes).
DEFAULT_MAX_BODY_SIZE = 4 * 1024 * 1024
#: Milliseconds a client waits before reconnecting to a stream the server ended.
DEFAULT_RETRY = 1000
#: Seconds ``close()`` waits for running handlers by default.
DEFAULT_CLOSE_TIMEOUT = 5.0
#: Request handlers running at once per process, by default.
DEFAULT_MAX_HANDLERS = 512
#: Listen streams open at once per process, by default.
DEFAULT_MAX_LISTEN_STREAMS = 10_000
#: Bytes of client info and capabilities a session may store, by default.
DEFAULT_MAX_SESSION_INFO = 64 * 1024
#: Sessions the server holds at once by default (all its workers, on a shared backend).
DEFAULT_MAX_SESSIONS = 10_000
#: Sessions one principal holds at once by default.
DEFAULT_MAX_SESSIONS_PER_PRINCIPAL = 100

#: The protocol eras an endpoint can serve (both by default).
ERAS = ("handshake", "modern")

#: ``principal(request) -> str | None``: the authenticated principal of a request (werkzeug ``Request``).
Principal = Callable[[Request], str | None]

_DEFAULT_SERVER_INFO = {"name": "session_manager", "version": __version__}


def _entries(entries: Iterable[str] | None) -> Iterable[str] | None:
    """An allowlist's entries as a tuple (read once, even from a generator); a str is left for Allowlist to refuse."""
    return entries if entries is None or isinstance(entries, str) else tuple(entries)


@dataclass(frozen=True)
class McpOptions:
    """The options of one MCP transport; invalid values raise ``TypeError``/``ValueError`` here, once.

    - *server_info*, *capabilities*, *instructions*: fill the
      InitializeResult where the handler's result leaves them out.
    - *json_response*: answer Streamable HTTP requests with plain JSON
      instead of an SSE stream (handler messages then go to the session's
      GET stream); the legacy HTTP+SSE transport ignores it.
    - *allowed_hosts*, *allowed_origins*: ``host[:port]`` and
      ``scheme://host[:port]`` allowlists (no port or ``:*``: any port);
      localhost names by default, ``None`` disables the check.
    - *max_body_size*: bytes per POST body (413 beyond).
    - *keepalive*: seconds between pings on idle streams;
      *stream_maxsize*: messages a stream may hold for a slow client;
      *stream_max_bytes*: bytes it may hold (16 MiB; a response larger
      than that is answered with a JSON-RPC internal error instead).
    - *principal*: called with each request, returns its authenticated
      principal (or ``None``); a session is only visible to its principal.
      (The Flask blueprints call it with no argument, inside Flask's
      request context.)
    - *retry*: milliseconds a client should wait before reconnecting to a
      stream the server ended (the SSE ``retry`` field, sent when a stream
      is primed and when the server closes it); ``None`` sends none.
    - *max_handlers*: request handlers (threads, greenlets) running at once
      in this process; one more request gets 503 with ``Retry-After``
      (``None``: no bound). Handlers of clients that left keep running until
      they return, so this bounds what they can hold.
    - *max_listen_streams*: 2026-07-28 listen streams open at once in this
      process; one more gets 503 with ``Retry-After``.
    - *max_session_info*: bytes of client info and capabilities one session
      may store (``initialize``); more gets 400 -32602.
    - *max_sessions*: sessions the server holds at once, counted by the
      info manager (so across every worker of a Redis deployment); one more
      ``initialize`` (or legacy ``GET /sse``) gets 503 with ``Retry-After``.
      *max_sessions_per_principal*: sessions one principal (the *principal*
      option) holds at once; one more gets 429 with ``Retry-After``, and
      other principals are not affected. Requests without a principal count
      only against *max_sessions*. A session stops counting when deleted
      or expired. ``None``: no cap. With caps, the info manager must
      enforce them (``enforces_quotas``: this package's backends do).
    - *eras*: which protocol eras the endpoint serves: ``"handshake"``
      (sessions, 2025-11-25 and before) and ``"modern"`` (stateless,
      2026-07-28); both by default, on one URL.
    - *cache_ttl_ms*, *cache_scope*: the cache hints of cacheable
      stateless results (lists, ``resources/read``, ``server/discover``)
      that the handler leaves out; by default nothing is cached.
    - *state_keys*: the keys (bytes, 16 or more) that seal the
      ``requestState`` of multi round-trip requests; the first seals, all
      open (rotation). Every worker must have the same: by default they are
      one random key kept by the info manager (shared through Redis).
      *state_ttl*: seconds a ``requestState`` stays valid.

    ``hosts`` and ``origins`` are the parsed allowlists.
    """

    server_info: Mapping[str, Any] | None = None
    capabilities: Mapping[str, Any] | None = None
    instructions: str | None = None
    json_response: bool = False
    allowed_hosts: Iterable[str] | None = DEFAULT_ALLOWED_HOSTS
    allowed_origins: Iterable[str] | None = DEFAULT_ALLOWED_ORIGINS
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    keepalive: float = DEFAULT_KEEPALIVE
    stream_maxsize: int = DEFAULT_MAXSIZE
    stream_max_bytes: int = DEFAULT_MAX_BYTES
    principal: Principal | None = None
    retry: int | None = DEFAULT_RETRY
    max_handlers: int | None = DEFAULT_MAX_HANDLERS
    max_session_info: int = DEFAULT_MAX_SESSION_INFO
    max_sessions: int | None = DEFAULT_MAX_SESSIONS
    max_sessions_per_principal: int | None = DEFAULT_MAX_SESSIONS_PER_PRINCIPAL
    max_listen_streams: int = DEFAULT_MAX_LISTEN_STREAMS
    eras: Iterable[str] = ERAS
    cache_ttl_ms: int = 0
    cache_scope: str = "private"
    state_keys: Sequence[bytes] | None = None
    state_ttl: float = DEFAULT_STATE_TTL
    hosts: Allowlist | None = field(init=False, repr=False, compare=False)
    origins: Allowlist | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.principal is not None and not callable(self.principal):
            raise TypeError(f"principal must be callable, not {type(self.principal).__name__}")
        positive_int(self.max_body_size, "max_body_size")
        # A stream with these settings validates them (the same checks as every stream), failing early.
        StreamController(
            keepalive=self.keepalive, maxsize=self.stream_maxsize, max_bytes=self.stream_max_bytes, retry=self.retry
        )
        for name in ("max_handlers", "max_sessions", "max_sessions_per_principal"):
            positive_int(getattr(self, name), name, optional=True)
        positive_int(self.max_listen_streams, "max_listen_streams")
        positive_int(self.max_session_info, "max_session_info")
        eras = _entries(self.eras)
        if isinstance(eras, str) or not eras or not set(eras) <= set(ERAS):
            raise ValueError(f"eras must name one or both of {', '.join(map(repr, ERAS))}, got {self.eras!r}")
        if type(self.cache_ttl_ms) is not int or self.cache_ttl_ms < 0:
            raise ValueError(f"cache_ttl_ms must be a non-negative int, got {self.cache_ttl_ms!r}")
        if self.cache_scope not in ("public", "private"):
            raise ValueError(f"cache_scope must be 'public' or 'private', got {self.cache_scope!r}")
        state_keys = None if self.state_keys is None else tuple(self.state_keys)
        if state_keys is not None:
            StateSealer(state_keys)  # checks them
        positive_seconds(self.state_ttl, "state_ttl")
        hosts, origins = _entries(self.allowed_hosts), _entries(self.allowed_origins)
        settings = {
            "server_info": dict(self.server_info or _DEFAULT_SERVER_INFO),
            "capabilities": dict(self.capabilities or {}),
            "json_response": bool(self.json_response),
            "eras": tuple(eras),
            "state_keys": state_keys,
            "allowed_hosts": hosts,
            "allowed_origins": origins,
            "hosts": None if hosts is None else Allowlist(hosts, origins=False),
            "origins": None if origins is None else Allowlist(origins, origins=True),
        }
        for name, value in settings.items():
            object.__setattr__(self, name, value)
