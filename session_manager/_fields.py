"""An InfoSessionManager over a per-session store of text fields.

Validation and JSON encoding of every metadata setter and getter live here
once; a backend only stores and reads text fields (and keeps
subscriptions), so all backends accept, reject and return exactly the same.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping
from typing import Any

from . import _validate
from .base import InfoSessionManager, SessionInfo, SessionQuota
from .errors import SessionNotFoundError

PROTOCOL_VERSION, CLIENT_INFO, CLIENT_CAPABILITIES, LOG_LEVEL = (
    "protocol_version",
    "client_info",
    "client_capabilities",
    "log_level",
)


def _load(value: str | None) -> dict[str, Any] | None:
    return None if value is None else json.loads(value)


class FieldStoreInfoManager(InfoSessionManager):
    """Implements the metadata methods on four storage primitives."""

    enforces_quotas = True

    @abc.abstractmethod
    def _insert(self, session_id: str, fields: dict[str, str], quota: SessionQuota | None) -> bool:
        """Create the session holding *fields*; ``False`` if it already exists.

        With a *quota*: counted against it atomically, or
        :class:`~session_manager.SessionLimitError` and nothing created.
        """

    @abc.abstractmethod
    def _read_all(self, session_id: str) -> Mapping[str, str] | None:
        """Every field of the session, or ``None`` if it does not exist."""

    @abc.abstractmethod
    def _read(self, session_id: str, name: str) -> str | None:
        """One field, ``None`` if unset or the session does not exist."""

    @abc.abstractmethod
    def _write(self, session_id: str, name: str, value: str) -> bool:
        """Set one field atomically with the existence check; ``False`` if the session does not exist."""

    def create(
        self,
        session_id: str,
        *,
        protocol_version: str | None = None,
        client_info: dict[str, Any] | None = None,
        client_capabilities: dict[str, Any] | None = None,
        quota: SessionQuota | None = None,
    ) -> None:
        _validate.session_id(session_id)
        if quota is not None and not isinstance(quota, SessionQuota):
            raise TypeError(f"quota must be a SessionQuota or None, not {type(quota).__name__}")
        fields: dict[str, str] = {}
        if protocol_version is not None:
            fields[PROTOCOL_VERSION] = _validate.text(protocol_version, "protocol version")
        if client_info is not None:
            fields[CLIENT_INFO] = _validate.json_object(client_info, "client info")
        if client_capabilities is not None:
            fields[CLIENT_CAPABILITIES] = _validate.json_object(client_capabilities, "client capabilities")
        if not self._insert(session_id, fields, quota):
            raise ValueError(f"session {session_id!r} already exists")

    def get(self, session_id: str) -> SessionInfo | None:
        fields = self._read_all(_validate.session_id(session_id))
        if fields is None:
            return None
        return SessionInfo(
            protocol_version=fields.get(PROTOCOL_VERSION),
            client_info=_load(fields.get(CLIENT_INFO)),
            client_capabilities=_load(fields.get(CLIENT_CAPABILITIES)),
            log_level=fields.get(LOG_LEVEL),
        )

    def _get(self, session_id: str, name: str) -> str | None:
        return self._read(_validate.session_id(session_id), name)

    def _set(self, session_id: str, name: str, value: str) -> None:
        if not self._write(_validate.session_id(session_id), name, value):
            raise SessionNotFoundError(session_id)

    def get_protocol_version(self, session_id: str) -> str | None:
        return self._get(session_id, PROTOCOL_VERSION)

    def set_protocol_version(self, session_id: str, version: str) -> None:
        self._set(session_id, PROTOCOL_VERSION, _validate.text(version, "protocol version"))

    def get_client_info(self, session_id: str) -> dict[str, Any] | None:
        return _load(self._get(session_id, CLIENT_INFO))

    def set_client_info(self, session_id: str, info: dict[str, Any]) -> None:
        self._set(session_id, CLIENT_INFO, _validate.json_object(info, "client info"))

    def get_client_capabilities(self, session_id: str) -> dict[str, Any] | None:
        return _load(self._get(session_id, CLIENT_CAPABILITIES))

    def set_client_capabilities(self, session_id: str, capabilities: dict[str, Any]) -> None:
        self._set(session_id, CLIENT_CAPABILITIES, _validate.json_object(capabilities, "client capabilities"))

    def get_log_level(self, session_id: str) -> str | None:
        return self._get(session_id, LOG_LEVEL)

    def set_log_level(self, session_id: str, level: str) -> None:
        self._set(session_id, LOG_LEVEL, _validate.log_level(level))
