"""Session ids the client sees, and the keys the managers store them under.

The server mints every id (``secrets``), so an id that does not look like
one of ours is simply unknown. With a principal, the managers' key is
``<principal>:<id>``: a session is bound to the principal that created it,
and another principal presenting the same id finds nothing (404).
"""

from __future__ import annotations

import hashlib
import re
import secrets

__all__ = ["is_minted", "mint_session_id", "session_key"]

#: Bytes of randomness in a minted id (43 URL-safe characters).
_ID_BYTES = 32
_MINTED = re.compile(r"[A-Za-z0-9_-]{43}")
#: Principals used verbatim in keys; anything else is hashed.
_PLAIN_PRINCIPAL = re.compile(r"[\x21-\x7e]{1,100}")


def mint_session_id() -> str:
    """A new unguessable session id: 256 random bits, URL-safe visible ASCII."""
    return secrets.token_urlsafe(_ID_BYTES)


def is_minted(value: str) -> bool:
    """Whether *value* has the shape of an id this module mints (and no ``:``)."""
    return _MINTED.fullmatch(value) is not None


def session_key(principal: str | None, session_id: str) -> str:
    """The managers' key of *session_id* for *principal* (the id itself without one).

    Distinct (principal, id) pairs always give distinct keys: minted ids
    contain no ``:``, and a principal is used verbatim only if it is short
    visible ASCII not starting with ``~``, otherwise replaced by ``~`` and
    its SHA-256.
    """
    if principal is None:
        return session_id
    if _PLAIN_PRINCIPAL.fullmatch(principal) is None or principal.startswith("~"):
        principal = "~" + hashlib.sha256(principal.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{principal}:{session_id}"
