"""ZeroMQ bus: publish/subscribe and request/reply across processes and hosts.

Topology: direct pub/sub, a small broker for discovery and requests
====================================================================

Every process calls ``make_bus(url)`` with the same ``url`` (``ipc:///path/prefix`` or
``tcp://host:port``). One process (the launcher's parent, or a test) first runs
``serve_broker(url)``: a thread with one ROUTER socket bound at ``url``.

::

      bus A (process 1)                 broker (ROUTER at url)             bus B (process 2)
      XPUB lossy    ─┐  HELLO endpoints ─▶  directory of publisher  ◀─ HELLO ─  XPUB lossy
      XPUB lossless ─┤  ◀─ PEERS list ──    endpoints; service      ── PEERS ─▶ XPUB lossless
      SUB per subscription ◀──────────── direct, one hop, zero-copy ─────────────┘
      DEALER per served topic ◀─ REQ ──  routes REQ/REP by topic  ◀── REQ ── DEALER (request)

- **Pub/sub is direct** (no proxy on the hot path). Each bus binds two XPUB sockets of its
  own: *lossy* (drops at the high-water mark, like PUB) and *lossless* (``XPUB_NODROP``: a
  full subscriber makes ``send`` block = backpressure). Subscriptions with policy ``latest``
  or ``queue(n)`` connect their SUB socket to every bus's lossy socket, ``all`` subscriptions
  to the lossless ones. Each bus tells the broker its two endpoints (``HELLO``, repeated every
  ``heartbeat_s`` as soft state) and gets back, and is pushed on every change, the list of all
  endpoints (``PEERS``); subscription threads connect to new endpoints as they appear and
  disconnect from peers that left (``BYE``) or stopped announcing (expired).
- A message travels as ``[topic + b"\\0", header, array buffers...]`` (codec frames, see
  ``runtime/codec.py``), sent with ``copy=False`` and received with ``copy=False``, so a
  camera frame is not copied in Python on either side. The NUL makes topic matching exact
  (ZeroMQ filters by prefix, at the publisher).
- **Request/reply goes through the broker**: a bus serving a topic runs one thread with a
  DEALER that registers the topic (``SERVE``, repeated as soft state); ``request`` sends
  ``REQ`` to the broker, which forwards it round-robin to a live server of that topic and
  routes the ``REP`` (or ``ERR``) back. With no server the broker answers ``NOSERVER`` and
  the client retries until its timeout, then raises ``TimeoutError``.

Freshness (``Policy``, see ``runtime/bus.py``) is applied by the subscriber's bounded
``Mailbox``: ``latest``/``queue(n)`` drop the oldest (counted in ``Subscription.dropped``);
``all`` blocks the subscription's receiver thread, which stops reading its socket, so the
ZeroMQ queues (``recv_hwm``, ``all_send_hwm``) and kernel buffers fill and the publisher's
send on the lossless socket blocks. Every ZeroMQ queue has a high-water mark; nothing is
unbounded. A frame that fails to decode is counted in ``Subscription.decode_errors`` and
logged (rate-limited); the receiver thread carries on.

As with any PUB/SUB, a subscriber receives what is published *after* its subscription has
reached the publisher (a few ms after ``subscribe``); ``wait_for_subscribers`` lets a
publisher wait for that.

Security: tcp binds to 127.0.0.1 unless ``bind_host`` says otherwise. Across hosts pass
``curve=CurveConfig(...)`` (keys made by ``engram keys``): every bound socket (broker ROUTER,
each bus's XPUBs) is a CURVE server that accepts only client keys on its allow-list (ZAP, via
pyzmq's ``ThreadAuthenticator``), and all traffic is encrypted. A peer without an allowed key
gets no peer list, no messages and no replies.

Endpoints: for ``ipc:///dir/bus`` the broker binds ``/dir/bus`` and each bus
``/dir/bus.<pid>-<n>.p`` / ``.a`` (unix socket paths must stay under 107 bytes; the
files of a process killed with SIGKILL are swept by the next broker or bus to bind
there, ``sweep_stale_ipc``); for
``tcp://host:port`` the broker binds ``host:port`` and each bus two ephemeral ports on
``bind_host``, announced with ``advertise_host``.

Run a standalone broker with ``python -m engram.runtime.zmq_bus URL``.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import itertools
import logging
import os
import re
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zmq

from engram.runtime.bus import Bus, BusClosed, Policy, Subscription
from engram.runtime.codec import DecodeError, decode, encode
from engram.runtime.messages import Message

__all__ = [
    "Broker",
    "CurveConfig",
    "ZmqBus",
    "ZmqBusConfig",
    "serve_broker",
]

log = logging.getLogger(__name__)

# Broker protocol verbs (first frame after the routing id).
_HELLO, _PEERS, _BYE = b"HELLO", b"PEERS", b"BYE"
_SERVE, _UNSERVE = b"SERVE", b"UNSERVE"
_REQ, _REP, _ERR, _NOSERVER = b"REQ", b"REP", b"ERR", b"NOSERVER"
_ZAP_DOMAIN = "engram"
_IPC_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
_BUS_NUMBERS = itertools.count(1)  # distinguishes buses of one process in ipc paths


# ---------------------------------------------------------------------------
# configuration


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


@dataclass
class ZmqBusConfig:
    """Tuning of a ``ZmqBus``; pass fields as keyword options to ``ZmqBus``/``make_bus``."""

    # tcp: interface the bus's publisher sockets bind to (env ENGRAM_BUS_BIND_HOST, so
    # containers and multi-host graphs can set it without code changes)
    bind_host: str = field(
        default_factory=lambda: os.environ.get("ENGRAM_BUS_BIND_HOST", "127.0.0.1")
    )
    # tcp: address peers dial to reach them ("" = bind_host; env ENGRAM_BUS_ADVERTISE_HOST)
    advertise_host: str = field(
        default_factory=lambda: os.environ.get("ENGRAM_BUS_ADVERTISE_HOST", "")
    )
    send_hwm: int = 16  # lossy channel: messages queued per subscriber before dropping
    all_send_hwm: int = 2  # lossless channel: messages queued per subscriber before blocking
    recv_hwm: int = 8  # messages queued in each subscription socket before the mailbox
    heartbeat_s: float = 1.0  # period of HELLO / SERVE announcements to the broker
    startup_wait_s: float = 2.0  # how long the constructor waits for the broker's peer list
    linger_s: float = 1.0  # how long close() lets queued outgoing messages drain
    poll_s: float = 0.05  # wake-up period of background threads (bounds close latency)
    log_interval_s: float = 5.0  # at most one decode-error log line per subscription per this


# ---------------------------------------------------------------------------
# URLs and endpoints

_IPC_TAG = re.compile(r"\.(\d+)-\d+\.[pa]$")


def sweep_stale_ipc(prefix: str) -> int:
    """Delete the ``PREFIX.<pid>-<n>.p|a`` socket files of bus processes that no longer
    run (killed with SIGKILL, they cannot remove their own); returns how many.

    Called whenever a broker or bus binds under ``prefix``; a file whose pid is alive (or
    not ours to check) is left alone.
    """
    base = Path(prefix)
    removed = 0
    try:
        candidates = list(base.parent.glob(glob.escape(base.name) + ".*"))
    except OSError:
        return 0
    for path in candidates:
        m = _IPC_TAG.search(path.name[len(base.name) :])
        if m is None or path.name[: len(base.name)] != base.name:
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # alive
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue  # someone else's process (or a bogus pid): not ours to judge
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                path.unlink()
                removed += 1
        except OSError:
            pass
    if removed:
        log.info("removed %d stale ipc socket file(s) of dead processes under %s", removed, prefix)
    return removed


@dataclass(frozen=True)
class _Url:
    scheme: str  # "ipc" | "tcp"
    path: str = ""  # ipc: socket path of the broker; other sockets add suffixes
    host: str = ""  # tcp
    port: int = 0  # tcp

    @property
    def broker_bind(self) -> str:
        if self.scheme == "ipc":
            return f"ipc://{self.path}"
        host = "127.0.0.1" if self.host == "localhost" else self.host
        return f"tcp://{host}:{self.port}"

    @property
    def broker_connect(self) -> str:
        if self.scheme == "ipc":
            return f"ipc://{self.path}"
        host = "127.0.0.1" if self.host in ("localhost", "*", "0.0.0.0") else self.host
        return f"tcp://{host}:{self.port}"


def _parse_url(url: str) -> _Url:
    if url.startswith("ipc://"):
        path = url[len("ipc://") :]
        if not path:
            raise ValueError(f"bad bus URL {url!r}: ipc:// needs a path, e.g. ipc:///tmp/engram")
        path = os.path.abspath(path)
        _check_ipc_path(path, url)
        return _Url("ipc", path=path)
    if url.startswith("tcp://"):
        rest = url[len("tcp://") :]
        host, sep, port = rest.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad bus URL {url!r}: use tcp://HOST:PORT with a port 1..65535")
        return _Url("tcp", host=host.strip("[]"), port=int(port))
    raise ValueError(f"bad bus URL {url!r}: ZmqBus takes ipc://PATH or tcp://HOST:PORT")


def _check_ipc_path(path: str, url: str, suffix_len: int = 0) -> None:
    size = len(os.fsencode(path)) + suffix_len
    if size > _IPC_PATH_MAX:
        raise ValueError(
            f"bus URL {url!r}: unix socket path {path!r} is too long ({size} bytes with the "
            f"per-process suffix, max {_IPC_PATH_MAX}); use a shorter path such as /tmp/engram"
        )


def _topic_key(topic: str) -> bytes:
    if not isinstance(topic, str) or not topic or "\0" in topic:
        raise ValueError(f"bad topic {topic!r}: must be a non-empty str without NUL")
    return topic.encode() + b"\0"


def _curve_server(sock: zmq.Socket, curve: CurveConfig | None) -> None:
    if curve is not None:
        sock.zap_domain = _ZAP_DOMAIN.encode()
        sock.curve_secretkey = curve.secret_key
        sock.curve_publickey = curve.public_key
        sock.curve_server = True


def _curve_client(sock: zmq.Socket, curve: CurveConfig | None, server_key: bytes | None) -> None:
    if curve is not None:
        sock.curve_secretkey = curve.secret_key
        sock.curve_publickey = curve.public_key
        sock.curve_serverkey = server_key or curve.server_public_key


class _AllowList:
    """ZAP credentials provider: a client key must be on the allow-list."""

    def __init__(self, curve: CurveConfig) -> None:
        self.curve = curve
        self.log = _RateLimitedLog(10.0)  # a refused peer retries every ~100 ms

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = self.curve.allows(key)
        if not allowed:
            self.log.warning(
                "CURVE: refused a peer with unknown key %s", key.decode("ascii", "replace")
            )
        return allowed


def _start_authenticator(ctx: zmq.Context, curve: CurveConfig | None) -> Any:
    if curve is None:
        return None
    from zmq.auth.thread import ThreadAuthenticator

    auth = ThreadAuthenticator(ctx, log=logging.getLogger(f"{__name__}.auth"))
    auth.start()
    auth.configure_curve_callback(_ZAP_DOMAIN, credentials_provider=_AllowList(curve))
    return auth


class _RateLimitedLog:
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


# ---------------------------------------------------------------------------
# broker


class Broker:
    """Directory of publisher endpoints and router of requests; see the module docstring.

    Started by ``serve_broker``; runs in a daemon thread until ``close()``.
    """

    def __init__(
        self, url: str, *, curve: CurveConfig | None = None, expiry_s: float = 10.0
    ) -> None:
        self.url = url
        self._parsed = _parse_url(url)
        self.expiry_s = expiry_s
        self._ctx = zmq.Context()
        self._auth = _start_authenticator(self._ctx, curve)
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.router_mandatory = True
        self._sock.sndhwm = self._sock.rcvhwm = 1000
        self._sock.linger = 0
        _curve_server(self._sock, curve)
        try:
            self._bind()
        except Exception:
            self._shutdown()
            raise
        # peer routing id -> (entry [lossy, lossless, key], last seen monotonic)
        self._peers: dict[bytes, tuple[list[Any], float]] = {}
        # topic -> {server routing id: last seen}
        self._services: dict[bytes, dict[bytes, float]] = collections.defaultdict(dict)
        self._rr = itertools.count()
        self.bad_messages = 0
        self._log = _RateLimitedLog(5.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"broker:{url}", daemon=True)
        self._thread.start()

    def _bind(self) -> None:
        endpoint = self._parsed.broker_bind
        if self._parsed.scheme == "ipc":
            path = self._parsed.path
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(path):  # zmq would silently steal a live socket's path
                if not stat.S_ISSOCK(os.lstat(path).st_mode):
                    raise RuntimeError(f"broker {self.url}: {path} exists and is not a socket")
                probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    probe.connect(path)
                except OSError:
                    os.unlink(path)  # stale file of a dead broker
                else:
                    raise RuntimeError(f"a broker is already serving {self.url}")
                finally:
                    probe.close()
            sweep_stale_ipc(path)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise RuntimeError(f"broker cannot bind {endpoint}: {exc}") from None

    def close(self) -> None:
        """Stop the broker thread and release its socket (idempotent)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _shutdown(self) -> None:
        self._sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()

    def _run(self) -> None:
        next_expiry = time.monotonic() + 1.0
        try:
            while not self._stop.is_set():
                if self._sock.poll(100):
                    while True:
                        try:
                            parts = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        try:
                            self._handle(parts)
                        except Exception as exc:  # noqa: BLE001 - never die on bad input
                            self.bad_messages += 1
                            self._log.warning("broker: dropped a bad message (%s)", exc)
                now = time.monotonic()
                if now >= next_expiry:
                    next_expiry = now + 1.0
                    self._expire(now)
        finally:
            self._shutdown()

    def _send(self, parts: list[Any]) -> bool:
        try:
            self._sock.send_multipart(parts, zmq.NOBLOCK, copy=False)
            return True
        except zmq.ZMQError as exc:  # peer gone (EHOSTUNREACH) or full (EAGAIN)
            log.debug("broker: cannot send to a peer (%s)", exc)
            return False

    def _handle(self, frames: list[zmq.Frame]) -> None:
        if len(frames) < 2:
            raise ValueError("message without a verb")
        sender, verb = frames[0].bytes, frames[1].bytes
        now = time.monotonic()
        if verb == _HELLO:
            info = msgpack.unpackb(frames[2].bytes) if len(frames) > 2 else None
            if not isinstance(info, dict) or not isinstance(info.get("pubs"), list):
                raise ValueError("HELLO without a publisher list")
            pubs = info["pubs"]
            if len(pubs) != 2 or not all(isinstance(p, str) for p in pubs):
                raise ValueError(f"HELLO with bad endpoints {pubs!r:.200}")
            key = info.get("key")
            entry = [pubs[0], pubs[1], key if isinstance(key, bytes) else None]
            old = self._peers.get(sender)
            self._peers[sender] = (entry, now)
            if old is None or old[0] != entry:
                self._push_peers()
            else:
                self._send([sender, _PEERS, self._peer_list()])
        elif verb == _BYE:
            if self._peers.pop(sender, None) is not None:
                self._push_peers()
        elif verb == _SERVE and len(frames) == 3:
            self._services[frames[2].bytes][sender] = now
        elif verb == _UNSERVE and len(frames) == 3:
            self._services.get(frames[2].bytes, {}).pop(sender, None)
        elif verb == _REQ and len(frames) >= 4:
            topic, req_id = frames[2].bytes, frames[3].bytes
            servers = self._services.get(topic, {})
            while servers:
                ids = list(servers)
                server = ids[next(self._rr) % len(ids)]
                if self._send([server, _REQ, sender, req_id, *frames[4:]]):
                    return
                servers.pop(server, None)  # dead or jammed: forget it, try another
            self._send([sender, _NOSERVER, req_id])
        elif verb in (_REP, _ERR) and len(frames) >= 4:
            client, req_id = frames[2].bytes, frames[3].bytes
            self._send([client, verb, req_id, *frames[4:]])
        else:
            raise ValueError(f"unknown verb {verb[:16]!r} or wrong frame count {len(frames)}")

    def _peer_list(self) -> bytes:
        return msgpack.packb([entry for entry, _ in self._peers.values()])

    def _push_peers(self) -> None:
        listing = self._peer_list()
        for peer in list(self._peers):
            self._send([peer, _PEERS, listing])

    def _expire(self, now: float) -> None:
        gone = [p for p, (_, seen) in self._peers.items() if now - seen > self.expiry_s]
        for peer in gone:
            del self._peers[peer]
        for servers in self._services.values():
            for server in [s for s, seen in servers.items() if now - seen > self.expiry_s]:
                del servers[server]
        if gone:
            self._push_peers()


def serve_broker(url: str, *, curve: CurveConfig | None = None, expiry_s: float = 10.0) -> Broker:
    """Start the bus broker for ``url`` in a background thread; ``.close()`` stops it.

    Call once per bus URL (e.g. in the launcher's parent process) before other processes use
    ``make_bus(url)``. ``expiry_s``: a peer that stops announcing itself for this long is
    forgotten. Raises ``RuntimeError`` when another broker already serves ``url``.
    """
    return Broker(url, curve=curve, expiry_s=expiry_s)


# ---------------------------------------------------------------------------
# the bus


@dataclass(frozen=True)
class _Peer:
    lossy: str
    lossless: str
    key: bytes | None


class _Receiver:
    """One subscription's SUB socket and thread."""

    def __init__(self, bus: ZmqBus, sub: Subscription, key: bytes) -> None:
        self.bus = bus
        self.sub = sub
        self.key = key
        self.lossless = sub.policy.kind == "all"
        self.stop = threading.Event()
        self.log = _RateLimitedLog(bus.config.log_interval_s)
        self.thread = threading.Thread(target=self._run, name=f"zmq-sub:{sub.topic}", daemon=True)

    def _run(self) -> None:
        bus, cfg = self.bus, self.bus.config
        sock = bus._ctx.socket(zmq.SUB)
        sock.rcvhwm = cfg.recv_hwm
        sock.linger = 0
        if bus.curve is not None:
            _curve_client(sock, bus.curve, None)
        sock.subscribe(self.key)
        connected: dict[str, _Peer] = {}
        seen_version = -1
        poll_ms = max(1, int(cfg.poll_s * 1000))
        try:
            while not self.stop.is_set():
                if bus._peers_version != seen_version:
                    seen_version = bus._peers_version
                    self._sync(sock, connected, bus._peer_snapshot())
                if not sock.poll(poll_ms):
                    continue
                for _ in range(256):  # then look at the peer list again
                    if self.stop.is_set():
                        break
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._deliver(frames)
        except zmq.ZMQError as exc:
            if not self.stop.is_set():
                log.error("subscription %s: socket error %s", self.sub.topic, exc)
        finally:
            sock.close(linger=0)

    def _sync(self, sock: zmq.Socket, connected: dict[str, _Peer], peers: set[_Peer]) -> None:
        wanted = {(p.lossless if self.lossless else p.lossy): p for p in peers}
        for endpoint in [e for e in connected if e not in wanted]:
            try:
                sock.disconnect(endpoint)
            except zmq.ZMQError:
                pass
            del connected[endpoint]
        for endpoint, peer in wanted.items():
            if endpoint not in connected:
                try:
                    if self.bus.curve is not None:
                        sock.curve_serverkey = peer.key or self.bus.curve.server_public_key
                    sock.connect(endpoint)
                except zmq.ZMQError as exc:
                    self.log.warning(
                        "subscription %s: cannot connect to %r: %s", self.sub.topic, endpoint, exc
                    )
                    continue
                connected[endpoint] = peer

    def _deliver(self, frames: list[zmq.Frame]) -> None:
        try:
            msg = decode(frames[1:])
        except DecodeError as exc:
            self.sub.decode_errors += 1
            self.log.warning(
                "subscription %s: dropped an undecodable message (%d so far): %s",
                self.sub.topic,
                self.sub.decode_errors,
                exc,
            )
            return
        self.sub.mailbox.put(msg)  # "all": blocks here while full = backpressure


class _Server:
    """One served topic: a DEALER registered with the broker, answering in its own thread."""

    def __init__(self, bus: ZmqBus, topic: str, handler: Callable[[Message], Message]) -> None:
        self.bus = bus
        self.topic = topic
        self.handler = handler
        self.stop = threading.Event()
        self.log = _RateLimitedLog(30.0)
        self.thread = threading.Thread(target=self._run, name=f"zmq-serve:{topic}", daemon=True)

    def _run(self) -> None:
        bus, cfg = self.bus, self.bus.config
        topic = self.topic.encode()
        sock = bus._ctx.socket(zmq.DEALER)
        sock.sndhwm = sock.rcvhwm = 64
        _curve_client(sock, bus.curve, None)
        sock.connect(bus._url.broker_connect)
        next_announce = 0.0
        poll_ms = max(1, int(cfg.poll_s * 1000))
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                if now >= next_announce:
                    next_announce = now + cfg.heartbeat_s
                    self._send(sock, [_SERVE, topic])
                if sock.poll(poll_ms):
                    parts = sock.recv_multipart(copy=False)
                    if len(parts) >= 3 and parts[0].bytes == _REQ:
                        self._send(sock, self._answer(parts))
            self._send(sock, [_UNSERVE, topic])
        except zmq.ZMQError as exc:
            if not self.stop.is_set():
                log.error("service %s: socket error %s", self.topic, exc)
        finally:
            sock.close(linger=int(cfg.linger_s * 1000))

    def _send(self, sock: zmq.Socket, parts: list[Any]) -> None:
        try:
            sock.send_multipart(parts, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.log.warning("service %s: broker not reachable, dropped a message", self.topic)

    def _answer(self, parts: list[zmq.Frame]) -> list[Any]:
        client, req_id = parts[1].bytes, parts[2].bytes
        try:
            request = decode(parts[3:])
        except DecodeError as exc:
            return [_ERR, client, req_id, f"bad request: {exc}".encode()]
        try:
            reply = self.handler(request)
            if not isinstance(reply, Message):
                raise TypeError(f"handler returned {type(reply).__name__}, not a Message")
            return [_REP, client, req_id, *encode(reply)]
        except Exception as exc:  # noqa: BLE001 - reported to the client, server lives on
            log.warning("service %s: handler failed: %r", self.topic, exc)
            return [_ERR, client, req_id, f"{type(exc).__name__}: {exc}".encode()]


class ZmqBus(Bus):
    """A ``Bus`` over ZeroMQ (see the module docstring for topology and wire format).

    ``url``: ``ipc:///path/prefix`` or ``tcp://host:port``, the same in every process; a
    broker must serve it (``serve_broker``) for processes to find each other (without one, a
    bus still talks to itself). ``curve``: CURVE keys; options: fields of ``ZmqBusConfig``.
    """

    def __init__(
        self,
        url: str,
        *,
        curve: CurveConfig | None = None,
        config: ZmqBusConfig | None = None,
        **options: Any,
    ) -> None:
        names = {f.name for f in dataclasses.fields(ZmqBusConfig)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise TypeError(f"ZmqBus: unknown option(s) {unknown}; known: {sorted(names)}")
        self.url = url
        self.config = dataclasses.replace(config or ZmqBusConfig(), **options)
        self.curve = curve
        self._url = _parse_url(url)
        self._closed = False
        self._number = next(_BUS_NUMBERS)
        self._ctx = zmq.Context()
        self._auth = None
        self._pub_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._seq: dict[str, int] = collections.defaultdict(int)
        self._counts: dict[int, dict[bytes, int]] = {}
        self._receivers: list[_Receiver] = []
        self._servers: dict[str, _Server] = {}
        self._local = threading.local()
        self._request_socks: list[zmq.Socket] = []
        self._req_ids = itertools.count(1)
        self._peers: set[_Peer] = set()
        self._peers_version = 0
        self._peers_ready = threading.Event()
        try:
            self._auth = _start_authenticator(self._ctx, curve)
            self._lossy = self._bind_pub("p", lossless=False)
            self._lossless = self._bind_pub("a", lossless=True)
        except Exception:
            self._ctx.destroy(linger=0)
            if self._auth is not None:
                self._auth.stop()
            raise
        key = curve.public_key if curve is not None else None
        self._me = _Peer(self._lossy_ep, self._lossless_ep, key)
        self._set_peers(set())
        self._control_stop = threading.Event()
        self._control = threading.Thread(target=self._control_run, name="zmq-bus", daemon=True)
        self._control.start()
        if not self._peers_ready.wait(self.config.startup_wait_s):
            log.warning(
                "ZmqBus(%s): no broker answered within %.1f s; other processes stay invisible "
                "until one runs (serve_broker / engram launch)",
                url,
                self.config.startup_wait_s,
            )

    # ---- sockets ------------------------------------------------------------------
    def _bind_pub(self, suffix: str, *, lossless: bool) -> zmq.Socket:
        cfg = self.config
        sock = self._ctx.socket(zmq.XPUB)
        sock.setsockopt(zmq.XPUB_VERBOSER, 1)  # every (un)subscribe reaches us: counting
        if lossless:
            sock.setsockopt(zmq.XPUB_NODROP, 1)
            sock.sndhwm = cfg.all_send_hwm
            sock.sndtimeo = max(1, int(cfg.poll_s * 1000))
        else:
            sock.sndhwm = cfg.send_hwm
        sock.linger = int(cfg.linger_s * 1000)
        _curve_server(sock, self.curve)
        if self._url.scheme == "ipc":
            tag = f".{os.getpid()}-{self._number}.{suffix}"
            _check_ipc_path(self._url.path, self.url, len(tag))
            Path(self._url.path).parent.mkdir(parents=True, exist_ok=True)
            sweep_stale_ipc(self._url.path)
            endpoint = f"ipc://{self._url.path}{tag}"
            sock.bind(endpoint)
        else:
            try:
                sock.bind(f"tcp://{cfg.bind_host}:*")
            except zmq.ZMQError as exc:
                raise ValueError(f"ZmqBus: cannot bind tcp on {cfg.bind_host!r}: {exc}") from None
            port = sock.last_endpoint.decode().rsplit(":", 1)[1]
            host = cfg.advertise_host or cfg.bind_host
            if host in ("*", "0.0.0.0"):
                raise ValueError(
                    f"ZmqBus: bind_host {cfg.bind_host!r} needs advertise_host "
                    "(the address other hosts dial)"
                )
            endpoint = f"tcp://{host}:{port}"
        if lossless:
            self._lossless_ep = endpoint
        else:
            self._lossy_ep = endpoint
        self._counts[id(sock)] = collections.defaultdict(int)
        return sock

    def _set_peers(self, peers: set[_Peer]) -> None:
        with self._state_lock:
            peers = set(peers) | {self._me}
            if peers != self._peers:
                self._peers = peers
                self._peers_version += 1

    def _peer_snapshot(self) -> set[_Peer]:
        with self._state_lock:
            return set(self._peers)

    def _control_run(self) -> None:
        cfg = self.config
        sock = self._ctx.socket(zmq.DEALER)
        sock.sndhwm = sock.rcvhwm = 16
        _curve_client(sock, self.curve, None)
        sock.connect(self._url.broker_connect)
        hello = [
            _HELLO,
            msgpack.packb({"pubs": [self._me.lossy, self._me.lossless], "key": self._me.key}),
        ]
        next_hello = 0.0
        poll_ms = max(1, int(cfg.poll_s * 1000))
        try:
            while not self._control_stop.is_set():
                now = time.monotonic()
                if now >= next_hello:
                    next_hello = now + cfg.heartbeat_s
                    try:
                        sock.send_multipart(hello, zmq.NOBLOCK)
                    except zmq.Again:
                        pass
                if sock.poll(poll_ms):
                    parts = sock.recv_multipart()
                    if len(parts) == 2 and parts[0] == _PEERS:
                        self._on_peers(parts[1])
            try:
                sock.send(_BYE, zmq.NOBLOCK)
            except zmq.Again:
                pass
        except zmq.ZMQError as exc:
            log.error("ZmqBus(%s): control socket error %s", self.url, exc)
        finally:
            sock.close(linger=200)

    def _on_peers(self, payload: bytes) -> None:
        try:
            listing = msgpack.unpackb(payload)
            peers = {
                _Peer(str(e[0]), str(e[1]), e[2] if isinstance(e[2], bytes) else None)
                for e in listing
            }
        except Exception as exc:  # noqa: BLE001 - a bad broker must not kill the bus
            log.warning("ZmqBus(%s): bad peer list from broker (%s)", self.url, exc)
            return
        self._set_peers(peers)
        self._peers_ready.set()

    # ---- Bus API ------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise BusClosed(f"bus {self.url!r} is closed")

    def publish(self, topic: str, msg: Message) -> None:
        self._check_open()
        if not isinstance(msg, Message):
            raise TypeError(f"publish({topic!r}): expected a Message, got {type(msg).__name__}")
        key = _topic_key(topic)
        with self._pub_lock:
            self._check_open()
            if msg.seq == 0:
                self._seq[topic] += 1
                msg.seq = self._seq[topic]
            frames = [key, *encode(msg)]
            self._drain_subscriptions()
            if self._counts[id(self._lossy)][key] > 0:
                self._lossy.send_multipart(frames, copy=False)
            if self._counts[id(self._lossless)][key] > 0:
                self._send_blocking(frames)

    def _send_blocking(self, frames: list[Any]) -> None:
        """Send on the lossless socket, waiting while an ``all`` subscriber is full."""
        while True:
            try:
                self._lossless.send_multipart(frames, copy=False)
                return
            except zmq.Again:
                if self._closed:
                    raise BusClosed(f"bus {self.url!r} closed while publishing") from None
                self._drain_subscriptions()  # a subscriber that left unblocks us

    def _drain_subscriptions(self) -> None:
        """Count (un)subscriptions reported by the XPUB sockets (caller holds _pub_lock)."""
        for sock in (self._lossy, self._lossless):
            counts = self._counts[id(sock)]
            while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                event = sock.recv()
                if event[:1] == b"\x01":
                    counts[event[1:]] += 1
                elif event[:1] == b"\x00" and counts[event[1:]] > 0:
                    counts[event[1:]] -= 1

    def subscriber_count(self, topic: str) -> int:
        """How many subscriptions (in any process) currently receive ``topic`` from this bus."""
        self._check_open()
        key = _topic_key(topic)
        with self._pub_lock:
            self._drain_subscriptions()
            return sum(c[key] for c in self._counts.values())

    def wait_for_subscribers(self, topic: str, count: int = 1, timeout_s: float = 5.0) -> bool:
        """Wait until ``count`` subscriptions receive ``topic`` from this bus; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.subscriber_count(topic) < count:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def subscribe(self, topic: str, policy: Policy | str = "queue(8)") -> Subscription:
        self._check_open()
        key = _topic_key(topic)
        pol = Policy.parse(policy)

        def remove() -> None:
            receiver.stop.set()
            with self._state_lock:
                if receiver in self._receivers:
                    self._receivers.remove(receiver)

        sub = Subscription(topic, pol, on_close=remove)
        receiver = _Receiver(self, sub, key)
        with self._state_lock:
            self._check_open()
            self._receivers.append(receiver)
        receiver.thread.start()
        return sub

    def serve(self, topic: str, handler: Callable[[Message], Message]) -> None:
        self._check_open()
        _topic_key(topic)
        server = _Server(self, topic, handler)
        with self._state_lock:
            self._check_open()
            if topic in self._servers:
                raise ValueError(f"service {topic!r} already has a server on this bus")
            self._servers[topic] = server
        server.thread.start()

    def request(self, topic: str, msg: Message, timeout_s: float = 2.0) -> Message:
        self._check_open()
        if not isinstance(msg, Message):
            raise TypeError(f"request({topic!r}): expected a Message, got {type(msg).__name__}")
        _topic_key(topic)
        request = [_REQ, topic.encode(), struct.pack("<Q", next(self._req_ids)), *encode(msg)]
        try:
            return self._request(topic, request, timeout_s)
        except zmq.ZMQError as exc:
            self._check_open()  # closed by another thread: BusClosed
            raise BusClosed(f"request({topic!r}): socket error {exc}") from None

    def _request(self, topic: str, request: list[Any], timeout_s: float) -> Message:
        sock = self._request_socket()
        req_id = request[2]
        deadline = time.monotonic() + timeout_s
        sent = ever_sent = no_server = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                why = (
                    "no server for it"
                    if no_server
                    else "no answer from the broker or a server"
                    if ever_sent
                    else "broker not reachable"
                )
                raise TimeoutError(f"no reply on {topic!r} within {timeout_s:.3g} s ({why})")
            if not sent:
                try:  # never block: with no broker the socket's queue (HWM) is full
                    sock.send_multipart(request, zmq.NOBLOCK, copy=False)
                    sent = ever_sent = True
                except zmq.Again:
                    time.sleep(min(0.05, left))
                    continue
            if not sock.poll(max(1, min(int(left * 1000), 100))):
                self._check_open()
                continue
            self._check_open()
            parts = sock.recv_multipart(copy=False)
            if len(parts) < 2 or parts[1].bytes != req_id:
                continue  # a late answer to an earlier, timed-out request
            verb = parts[0].bytes
            if verb == _REP:
                return decode(parts[2:])
            if verb == _ERR:
                text = parts[2].bytes.decode(errors="replace") if len(parts) > 2 else "?"
                raise RuntimeError(f"service {topic!r} failed: {text}")
            if verb == _NOSERVER:  # retry until the deadline: a server may register soon
                no_server, sent = True, False
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _request_socket(self) -> zmq.Socket:
        sock = getattr(self._local, "sock", None)
        if sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.sndhwm = sock.rcvhwm = 16
            sock.linger = 0
            _curve_client(sock, self.curve, None)
            sock.connect(self._url.broker_connect)
            self._local.sock = sock
            with self._state_lock:
                self._request_socks.append(sock)
        return sock

    def close(self) -> None:
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            receivers, self._receivers = self._receivers, []
            servers, self._servers = list(self._servers.values()), {}
        for worker in [*receivers, *servers]:
            worker.stop.set()
        for receiver in receivers:
            receiver.sub.mailbox.close()
        self._control_stop.set()
        for thread in [w.thread for w in [*receivers, *servers]] + [self._control]:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout=2.0)
        with self._pub_lock:
            self._lossy.close()
            self._lossless.close()
        for sock in self._request_socks:
            sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.destroy(linger=0)

    def __repr__(self) -> str:
        return f"ZmqBus({self.url!r}, peers={len(self._peers)}, closed={self._closed})"


def _main(argv: list[str] | None = None) -> int:
    import argparse
    import signal

    parser = argparse.ArgumentParser(
        prog="python -m engram.runtime.zmq_bus", description="Run a standalone Engram bus broker."
    )
    parser.add_argument("url", help="bus URL, e.g. ipc:///tmp/engram or tcp://127.0.0.1:5550")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    broker = serve_broker(args.url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"broker serving {args.url} (Ctrl-C to stop)", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    broker.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
