"""Session ids the client sees, and the keys the managers store them under.

The server mints every id (``secrets``), so an id that does not look like
one of ours is simply unknown. With a principal, the managers' key is
``<principal>:<id>``: a session is bound to the principal that created it,
and another principal presenting the same id finds nothing (404).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

__all__ = ["is_minted", "mint_session_id", "session_key"]

#: Bytes in a minted id: its 43 URL-safe base64 characters, no padding.
_ID_BYTES = 32
#: First bytes whose top 6 bits encode ``-`` (62) or ``_`` (63) are never drawn.
_FIRST_BYTE_BOUND = 62 << 2
#: Exactly the minted ids: an alphanumeric first character (never read as a
#: command-line option), and a last one carrying 4 bits (2 zero padding bits).
_MINTED = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{41}[AEIMQUYcgkosw048]")
#: Principals used verbatim in keys; anything else is hashed.
_PLAIN_PRINCIPAL = re.compile(r"[\x21-\x7e]{1,100}")


def mint_session_id() -> str:
    """A new unguessable session id: 255.95 random bits, URL-safe visible ASCII.

    Like ``secrets.token_urlsafe(32)``, except that the first character is
    alphanumeric: an id starting with ``-`` would be taken for an option on
    a command line (``notify.py --session -x...``). The first byte is drawn
    uniformly below the bytes that encode ``-`` or ``_`` first, which is the
    same as redrawing such tokens, with no loop.
    """
    raw = bytes([secrets.randbelow(_FIRST_BYTE_BOUND)]) + secrets.token_bytes(_ID_BYTES - 1)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


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
