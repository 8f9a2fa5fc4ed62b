"""CURVE security of the ZeroMQ bus: keys (``CurveConfig``), socket set-up and the ZAP
allow-list that refuses peers with unknown keys.

Keys are Z85 text files written by ``engram keys`` (``engram.runtime.keys``). Used by the
broker (``engram.runtime.zmq_broker``) and the bus (``engram.runtime.zmq_bus``); see the
latter's docstring for what CURVE protects.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.utils.z85

__all__ = [
    "CurveConfig",
    "RateLimitedLog",
    "curve_client",
    "curve_server",
    "start_authenticator",
]

log = logging.getLogger(__name__)

_ZAP_DOMAIN = "engram"


@dataclass(frozen=True)
class CurveConfig:
    """CURVE keys of one node. Keys are Z85 text (40 chars), as ``engram keys`` writes them.

    Load from files with ``CurveConfig.from_files``.
    """

    public_key: bytes  # this node's public key
    secret_key: bytes  # this node's secret key (keep private)
    server_public_key: bytes  # the broker's public key (what this node connects to)
    allowed_client_keys: tuple[bytes, ...] = ()  # peers' public keys allowed to connect here

    def __post_init__(self) -> None:
        for name in ("public_key", "secret_key", "server_public_key"):
            object.__setattr__(self, name, _z85_key(name, getattr(self, name)))
        allowed = tuple(
            _z85_key(f"allowed_client_keys[{i}]", k) for i, k in enumerate(self.allowed_client_keys)
        )
        if self.public_key not in allowed:
            allowed += (self.public_key,)  # a node always talks to itself
        object.__setattr__(self, "allowed_client_keys", allowed)

    @classmethod
    def from_files(
        cls,
        secret_key_file: str | os.PathLike[str],
        *,
        server_public_key_file: str | os.PathLike[str] | None,
        allowed_keys_dir: str | os.PathLike[str] | None = None,
    ) -> CurveConfig:
        """Keys from ``engram keys`` files: this node's ``NAME.key_secret``, the broker's
        ``*.key`` (None: this node's own public key, for a process that serves the broker
        with its own key pair), and a directory of allowed peers' ``*.key`` files."""
        import zmq.auth

        public, secret = _load_cert(secret_key_file)
        if secret is None:
            raise ValueError(f"{secret_key_file}: no secret key in this file (use .key_secret)")
        server_public = public
        if server_public_key_file is not None:
            server_public, _ = _load_cert(server_public_key_file)
        allowed: list[bytes] = []
        if allowed_keys_dir is not None:
            if not Path(allowed_keys_dir).is_dir():
                raise ValueError(f"allowed_keys_dir {allowed_keys_dir}: not a directory")
            allowed = sorted(zmq.auth.load_certificates(os.fspath(allowed_keys_dir)))
        return cls(public, secret, server_public, tuple(allowed))

    def allows(self, client_key: bytes) -> bool:
        """Whether a Z85 client public key is on the allow-list."""
        return client_key in self.allowed_client_keys


def _z85_key(name: str, key: bytes | str) -> bytes:
    if isinstance(key, str):
        key = key.encode("ascii", "replace")
    if not isinstance(key, bytes) or len(key) != 40:
        raise ValueError(f"CurveConfig.{name}: must be a 40-char Z85 key, got {key!r:.60}")
    try:
        zmq.utils.z85.decode(key)
    except Exception:  # noqa: BLE001
        raise ValueError(f"CurveConfig.{name}: not valid Z85 text: {key!r}") from None
    return key


def _load_cert(path: str | os.PathLike[str]) -> tuple[bytes, bytes | None]:
    import zmq.auth

    try:
        public, secret = zmq.auth.load_certificate(os.fspath(path))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read CURVE key file {path}: {exc}") from None
    return public, secret


def curve_server(sock: zmq.Socket, curve: CurveConfig | None) -> None:
    if curve is not None:
        sock.zap_domain = _ZAP_DOMAIN.encode()
        sock.curve_secretkey = curve.secret_key
        sock.curve_publickey = curve.public_key
        sock.curve_server = True


def curve_client(sock: zmq.Socket, curve: CurveConfig | None, server_key: bytes | None) -> None:
    if curve is not None:
        sock.curve_secretkey = curve.secret_key
        sock.curve_publickey = curve.public_key
        sock.curve_serverkey = server_key or curve.server_public_key


class _AllowList:
    """ZAP credentials provider: a client key must be on the allow-list."""

    def __init__(self, curve: CurveConfig) -> None:
        self.curve = curve
        self.log = RateLimitedLog(10.0)  # a refused peer retries every ~100 ms

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = self.curve.allows(key)
        if not allowed:
            self.log.warning(
                "CURVE: refused a peer with unknown key %s", key.decode("ascii", "replace")
            )
        return allowed


def start_authenticator(ctx: zmq.Context, curve: CurveConfig | None) -> Any:
    if curve is None:
        return None
    from zmq.auth.thread import ThreadAuthenticator

    auth = ThreadAuthenticator(ctx, log=logging.getLogger(f"{__name__}.auth"))
    auth.start()
    auth.configure_curve_callback(_ZAP_DOMAIN, credentials_provider=_AllowList(curve))
    return auth


class RateLimitedLog:
    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last = -float("inf")
        self._suppressed = 0

    def warning(self, fmt: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self.interval_s:
            self._suppressed += 1
            return
        more = f" (+{self._suppressed} more since last report)" if self._suppressed else ""
        log.warning(fmt + more, *args)
        self._last, self._suppressed = now, 0
