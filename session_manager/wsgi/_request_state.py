"""The sealed ``requestState`` of a multi round-trip request (MCP 2026-07-28).

A server that needs input (an elicitation, a sampling, the roots) answers
with an ``input_required`` result; the client asks its user or model and
retries the request with the answers and the ``requestState`` echoed. The
state carries the answers of earlier rounds, so any worker can serve the
retry: nothing is kept on the server. The client holds the state, so it is
attacker-controlled: it is sealed with HMAC-SHA256 under keys every worker
shares, and :meth:`StateSealer.open` refuses (``-32602``) a state that was
forged or altered, has expired, belongs to another principal, or was issued
for another request (method and arguments are bound by digest). Its nonce
is claimed when a retry uses it (:meth:`InfoSessionManager.claim`, shared by
every worker): a state serves one retry, never a replay.

Keys: the first of *keys* seals, every one opens, so a key is rotated by
putting the new one first and dropping the old one once states sealed with
it have expired (*ttl*).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from .._jsonrpc import INVALID_PARAMS, JsonRpcError

__all__ = ["DEFAULT_STATE_TTL", "Opened", "StateSealer", "params_digest"]

#: Seconds a sealed ``requestState`` stays valid by default.
DEFAULT_STATE_TTL = 600.0
#: Longest ``requestState`` opened (characters): a bound on what a client makes the server decode.
_MAX_STATE = 256 * 1024
#: Request params that change from round to round, left out of the digest that binds a state to its request.
_ROUND_PARAMS = ("_meta", "inputResponses", "requestState")


def params_digest(method: str, params: Mapping[str, Any]) -> str:
    """What binds a state to one request: its method and its arguments, whatever the round."""
    stable = {key: value for key, value in params.items() if key not in _ROUND_PARAMS}
    text = json.dumps([method, stable], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _refused(why: str) -> JsonRpcError:
    return JsonRpcError(INVALID_PARAMS, f"Invalid params: requestState {why}; send the request again without it")


class Opened(NamedTuple):
    """What a genuine state carries: the answers so far, its nonce, and the seconds it stays valid."""

    answers: dict[str, Any]
    nonce: str
    ttl: float


class StateSealer:
    """Seals and opens request states with shared keys, a lifetime and a binding to principal and request."""

    __slots__ = ("_clock", "_keys", "ttl")

    def __init__(
        self, keys: Sequence[bytes], ttl: float = DEFAULT_STATE_TTL, clock: Callable[[], float] = time.time
    ) -> None:
        if not keys or not all(isinstance(key, bytes) and len(key) >= 16 for key in keys):
            raise ValueError("request state keys must be a non-empty sequence of bytes, each at least 16 long")
        self._keys = tuple(keys)
        self.ttl = ttl
        self._clock = clock  # wall time: every worker must agree on it

    def seal(self, principal: str | None, digest: str, answers: Mapping[str, Any]) -> str:
        """A state for the next round: the answers so far, bound to *principal* and the request's *digest*."""
        body = {
            "p": principal,
            "d": digest,
            "e": round(self._clock() + self.ttl, 3),
            "n": secrets.token_hex(16),  # the state's identity: claimed on use, so it serves one retry
            "a": answers,
        }
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
        return _b64(payload) + "." + _b64(hmac.new(self._keys[0], payload, hashlib.sha256).digest())

    def open(self, state: object, principal: str | None, digest: str) -> Opened:
        """The answers a state carries; :class:`JsonRpcError` (``-32602``) unless it is genuine, current and this request's.

        Single use is the caller's to enforce, with :attr:`Opened.nonce`
        (claimed for :attr:`Opened.ttl` seconds): the sealer keeps no state.
        """
        if type(state) is not str or len(state) > _MAX_STATE or state.count(".") != 1:
            raise _refused("is not one this server issued")
        encoded, _, mac = state.partition(".")
        try:
            payload, tag = _unb64(encoded), _unb64(mac)
        except (binascii.Error, ValueError):
            raise _refused("is not one this server issued") from None
        if not any(hmac.compare_digest(hmac.new(key, payload, hashlib.sha256).digest(), tag) for key in self._keys):
            raise _refused("was altered or not issued by this server")
        body = json.loads(payload)  # sealed by us: well-formed
        if body["e"] < self._clock():
            raise _refused("has expired")
        if body["p"] != principal:
            raise _refused("belongs to another principal")
        if body["d"] != digest:
            raise _refused("was issued for another request")
        return Opened(body["a"], body["n"], max(body["e"] - self._clock(), 0.001))
