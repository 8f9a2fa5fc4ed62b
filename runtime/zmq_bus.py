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
  full subscriber makes ``send`` wait = backpressure, for at most ``all_block_timeout_s``;
  see "A stuck subscriber" below). Subscriptions with policy ``latest``
  or ``queue(n)`` connect their SUB socket to every bus's lossy socket, ``all`` subscriptions
  to the lossless ones. Each bus tells the broker its two endpoints (``HELLO``, repeated every
  ``heartbeat_s`` as soft state) and gets back, and is pushed on every change, the list of all
  endpoints (``PEERS``); subscription threads connect to new endpoints as they appear and
  disconnect from peers that left (``BYE``) or stopped announcing (expired).
- A message travels as ``[topic + b"\\0" + tag + publisher id + wire number, header, array
  buffers...]`` (codec
  frames, see ``runtime/codec.py``), sent with ``copy=False`` and received with
  ``copy=False``, so a camera frame is not copied in Python on either side. The NUL makes
  topic matching exact (ZeroMQ filters by prefix, at the publisher); the 8-byte publisher id
  after it lets a lossless subscriber tell each publisher's sequence numbers apart, and the
  u64 wire number (messages this bus published) keeps each publisher's order where a
  subscription gets messages on two paths (``runtime/shm_notify.py``).
- **Same host, large payloads** (``ipc://`` buses): the array bytes go through a
  shared-memory ring and the frames carry a small descriptor instead (``runtime/shm.py``),
  sent by the publisher's thread as a unix datagram straight to each subscription's
  receiver thread (``runtime/shm_notify.py``: no ZeroMQ I/O threads on the way; over
  ZeroMQ when its datagram queue is full); topics and policies are unchanged.
  ``tcp://`` (other hosts, CURVE) stays inline.
- **Request/reply goes through the broker**: a bus serving a topic runs one thread with a
  DEALER that registers the topic (``SERVE``, repeated as soft state); ``request`` sends
  ``REQ`` to the broker, which forwards it round-robin to a live server of that topic and
  routes the ``REP`` (or ``ERR``) back. With no server the broker answers ``NOSERVER`` and
  the client retries until its timeout, then raises ``TimeoutError``.

Freshness (``QueuePolicy``, see ``runtime/bus.py``) is applied by the subscriber's bounded
``Mailbox``: ``latest``/``queue(n)`` drop the oldest (counted in ``Subscription.dropped``);
``all`` blocks the subscription's receiver thread, which stops reading its socket, so the
ZeroMQ queues (``recv_hwm``, ``all_send_hwm``) and kernel buffers fill and the publisher's
send on the lossless socket waits. Every ZeroMQ queue has a high-water mark; nothing is
unbounded.

A stuck subscriber costs only itself. ``XPUB_NODROP`` refuses a message while *any*
matching subscriber is full, so one peer that never reads would freeze its publisher (and
every topic that publisher sends). The wait is therefore bounded: after
``all_block_timeout_s`` (default 2 s) the message is sent once in lossy mode, which delivers
it to every subscriber with room and drops it for the full ones; ZeroMQ then parks the full
pipe (it takes nothing until its reader drains it), so the following sends flow at full rate
to everyone else. The publisher counts these forced sends (``stalled``, per topic); the stuck
subscriber counts the messages it missed from the gaps in each publisher's sequence numbers
(``Subscription.lost``). The lossy and lossless sockets have separate locks, so a publish
waiting on the lossless one never delays ``latest``/``queue(n)`` traffic such as heartbeats. A frame that fails to decode is counted in ``Subscription.decode_errors`` and
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

The broker is ``engram.runtime.zmq_broker`` (run a standalone one with
``python -m engram.runtime.zmq_broker URL``), CURVE keys and sockets ``engram.runtime.zmq_curve``.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import msgpack
import zmq

from engram.runtime.bus import Bus, BusClosed, QueuePolicy, Subscription
from engram.runtime.codec import DecodeError, decode, encode
from engram.runtime.messages import Message
from engram.runtime.shm import ShmWriter, empty_arrays, shm_supported
from engram.runtime.shm_notify import DIRECT, INLINE, MAX_DATAGRAM, NOTIFY_MARK, NotifySender
from engram.runtime.zmq_broker import (
    BYE,
    ERR,
    HELLO,
    NOSERVER,
    PEERS,
    REP,
    REQ,
    SERVE,
    UNSERVE,
    check_ipc_path,
    parse_url,
    sweep_stale_ipc,
)
from engram.runtime.zmq_curve import (
    CurveConfig,
    RateLimitedLog,
    curve_client,
    curve_server,
    start_authenticator,
)
from engram.runtime.zmq_receiver import Peer as _Peer
from engram.runtime.zmq_receiver import Receiver as _Receiver

__all__ = ["ZmqBus", "ZmqBusConfig"]

log = logging.getLogger(__name__)

_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
_WIRE = struct.Struct("<Q")  # frame 0's wire number
_BUS_NUMBERS = itertools.count(1)  # distinguishes buses of one process in ipc paths


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
    # lossless channel: longest one publish waits for a full subscriber; then the message is
    # dropped for the full ones only (a stuck peer costs only itself). 0 = wait forever
    all_block_timeout_s: float = 2.0
    recv_hwm: int = 8  # messages queued in each subscription socket before the mailbox
    heartbeat_s: float = 1.0  # period of HELLO / SERVE announcements to the broker
    startup_wait_s: float = 2.0  # how long the constructor waits for the broker's peer list
    linger_s: float = 1.0  # how long close() lets queued outgoing messages drain
    poll_s: float = 0.05  # wake-up period of background threads (bounds close latency)
    log_interval_s: float = 5.0  # at most one decode-error log line per subscription per this
    # same host: a consumer waiting in get() reads datagrams itself; this long after it last
    # left get() the receiver thread takes them over again (runtime/zmq_receiver.py)
    direct_grace_s: float = 0.005
    # ... and while messages come faster than this (the last two within it), waits for the
    # next one awake, polling, up to this long before sleeping in the kernel; 0 = never
    # (env ENGRAM_BUS_SPIN_S). Off by default: it pays only where the consumer has a core
    # to itself (runtime/zmq_receiver.py, "Waiting awake")
    direct_spin_s: float = field(default_factory=lambda: _env_seconds("ENGRAM_BUS_SPIN_S"))
    # ... else, while messages come faster than this, takes up to three short naps
    # (direct_nap_s each), looking at the socket after each, before it sleeps on the
    # socket: the publisher's sendto then has nobody to wake (a cross-CPU wake-up costs the
    # publisher 40-55 us here); 0 = never (env ENGRAM_BUS_NAP_S; runtime/zmq_receiver.py,
    # "Napping")
    direct_nap_gap_s: float = field(
        default_factory=lambda: _env_seconds("ENGRAM_BUS_NAP_S", 0.0003)
    )
    direct_nap_s: float = 5e-6  # one nap (the kernel's timer slack, 50 us, comes on top)


def _env_seconds(name: str, default: float = 0.0) -> float:
    """A duration in seconds from the environment (unset or empty: ``default``)."""
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number of seconds from 0 to 1, got {raw!r}")
    return value


_DRAIN_EVERY_S = 0.001  # publish reads lossy (un)subscriptions at most this often (see there)
_KEYS: dict[str, bytes] = {}  # topic -> its key, checked once (publish asks per message)


def _topic_key(topic: str) -> bytes:
    key = _KEYS.get(topic) if type(topic) is str else None
    if key is not None:
        return key
    if not isinstance(topic, str) or not topic or "\0" in topic:
        raise ValueError(f"bad topic {topic!r}: must be a non-empty str without NUL")
    key = topic.encode() + b"\0"
    if len(_KEYS) < 4096:  # (bounded: topics are few; beyond, checked every time)
        _KEYS[topic] = key
    return key


# ---------------------------------------------------------------------------
# the bus


class _Server:
    """One served topic: a DEALER registered with the broker, answering in its own thread."""

    def __init__(self, bus: ZmqBus, topic: str, handler: Callable[[Message], Message]) -> None:
        self.bus = bus
        self.topic = topic
        self.handler = handler
        self.stop = threading.Event()
        self.log = RateLimitedLog(30.0)
        self.thread = threading.Thread(target=self._run, name=f"zmq-serve:{topic}", daemon=True)

    def _run(self) -> None:
        bus, cfg = self.bus, self.bus.config
        topic = self.topic.encode()
        sock = bus._ctx.socket(zmq.DEALER)
        sock.sndhwm = sock.rcvhwm = 64
        curve_client(sock, bus.curve, None)
        sock.connect(bus._url.broker_connect)
        next_announce = 0.0
        poll_ms = max(1, int(cfg.poll_s * 1000))
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                if now >= next_announce:
                    next_announce = now + cfg.heartbeat_s
                    self._send(sock, [SERVE, topic])
                if sock.poll(poll_ms):
                    parts = sock.recv_multipart(copy=False)
                    if len(parts) >= 3 and parts[0].bytes == REQ:
                        self._send(sock, self._answer(parts))
            self._send(sock, [UNSERVE, topic])
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
            return [ERR, client, req_id, f"bad request: {exc}".encode()]
        try:
            reply = self.handler(request)
            if not isinstance(reply, Message):
                raise TypeError(f"handler returned {type(reply).__name__}, not a Message")
            return [REP, client, req_id, *encode(reply)]
        except Exception as exc:  # noqa: BLE001 - reported to the client, server lives on
            log.warning("service %s: handler failed: %r", self.topic, exc)
            return [ERR, client, req_id, f"{type(exc).__name__}: {exc}".encode()]


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
        self._url = parse_url(url)
        self._closed = False
        self._number = next(_BUS_NUMBERS)
        self._ctx = zmq.Context()
        self._auth = None
        # one lock per publisher socket (ZeroMQ sockets are not thread-safe): a publish
        # waiting on a full lossless subscriber never delays lossy traffic (heartbeats)
        self._lossy_lock = threading.Lock()
        self._lossless_lock = threading.Lock()
        self._id = os.urandom(8)  # publisher id, after the topic's NUL in frame 0
        self._wire = 0  # messages published (frame 0, after the id: order across two paths)
        self._drained_at = 0.0  # monotonic time publish last read the lossy (un)subscriptions
        self._lossless_drained_at = 0.0  # ... and the lossless ones
        # ipc: every peer is on this host, so large payloads go through shared memory
        self._shm = ShmWriter() if self._url.scheme == "ipc" and shm_supported() else None
        # ... and their notifications go straight to the subscribers' threads as datagrams
        self._notify = NotifySender() if self._shm is not None else None
        self.stalled: dict[str, int] = collections.defaultdict(int)  # forced drops per topic
        self._state_lock = threading.Lock()
        self._seq: dict[str, int] = collections.defaultdict(int)
        self._counts: dict[int, dict[bytes, int]] = {}
        self._receivers: list[_Receiver] = []
        self._servers: dict[str, _Server] = {}
        self._local = threading.local()
        self._request_socks: list[zmq.Socket] = []
        self._stall_log = RateLimitedLog(self.config.log_interval_s)
        self._req_ids = itertools.count(1)
        self._peers: set[_Peer] = set()
        self._peers_version = 0
        self._peers_ready = threading.Event()
        try:
            self._auth = start_authenticator(self._ctx, curve)
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
        curve_server(sock, self.curve)
        if self._url.scheme == "ipc":
            tag = f".{os.getpid()}-{self._number}.{suffix}"
            check_ipc_path(self._url.path, self.url, len(tag))
            Path(self._url.path).parent.mkdir(parents=True, exist_ok=True)
            sweep_stale_ipc(self._url.path)
            endpoint = f"ipc://{self._url.path}{tag}"
            sock.bind(endpoint)
        else:
            try:
                sock.bind(f"tcp://{cfg.bind_host}:*")
            except zmq.ZMQError as exc:
                raise ValueError(f"ZmqBus: cannot bind tcp on {cfg.bind_host!r}: {exc}") from None
            # pyzmq types sockopt attributes as int | bytes | str; LAST_ENDPOINT is bytes
            port = cast(bytes, sock.last_endpoint).decode().rsplit(":", 1)[1]
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
        curve_client(sock, self.curve, None)
        sock.connect(self._url.broker_connect)
        hello = [
            HELLO,
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
                    if len(parts) == 2 and parts[0] == PEERS:
                        self._on_peers(parts[1])
            try:
                sock.send(BYE, zmq.NOBLOCK)
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
        if not isinstance(msg, Message):
            raise TypeError(f"publish({topic!r}): expected a Message, got {type(msg).__name__}")
        key = _topic_key(topic)
        with self._lossy_lock:
            self._check_open()
            if msg.seq == 0:
                self._seq[topic] += 1
                msg.seq = self._seq[topic]
            self._wire += 1  # (frame 0's wire number: a subscription's order, two paths)
            tail = self._id + _WIRE.pack(self._wire)
            frames = [key + DIRECT + tail, *encode(msg)]
            # (un)subscriptions are read at most every _DRAIN_EVERY_S by publish (a
            # getsockopt per socket, ~3.5 us hot, ~5 cold: 4% of a flat-out camera
            # publisher's loop each): a subscription may miss what comes that soon after it,
            # as with ZeroMQ's own subscription delay; subscriber_count and
            # wait_for_subscribers read both sockets every time
            now = time.monotonic()
            if now - self._drained_at >= _DRAIN_EVERY_S:
                self._drained_at = now
                self._drain_subscriptions(self._lossy)
            lossy, counts = self._counts[id(self._lossy)], self._counts[id(self._lossless)]
            n_lossless = counts.get(key, 0)
            readers = self._readers(key)
            if self._shm is not None and readers:
                frames = self._shm.wrap(topic, frames, readers) or frames  # None: stays inline
            # Same-host lossy subscriptions get it as a datagram if it fits; if not, and only
            # because every ring slot was in use, it is dropped for them (over ZeroMQ it
            # could overtake or trail their datagrams); else (INLINE) ZeroMQ carries it.
            notify = self._notify
            # (codec and descriptor frames are bytes or byte-cast memoryviews: len is size)
            direct = notify is not None and sum(map(len, frames)) < MAX_DATAGRAM
            if not direct and not (self._shm is not None and self._shm.full):
                frames[0] = key + INLINE + tail
            if lossy[key] + (lossy[key + INLINE] if frames[0][len(key)] == INLINE[0] else 0):
                self._lossy.send_multipart(frames, copy=False)
            if notify is not None and direct:
                # a subscription whose datagram queue is full (its reader lags) gets this
                # one over ZeroMQ, to its own prefix: the newest message is not the one lost
                for addr in notify.send(key, frames):
                    fallback = [key + NOTIFY_MARK + addr + tail, *frames[1:]]
                    self._lossy.send_multipart(fallback, copy=False)
            elif notify is not None and frames[0][len(key)] == DIRECT[0]:
                notify.dropped += notify.count(key)
        # No lossless subscriber a moment ago, and not yet time to look again: done.
        if not n_lossless and now - self._lossless_drained_at < _DRAIN_EVERY_S:
            return
        # Busy (another publish waits on a full subscriber): a topic that no lossless
        # subscriber had a moment ago does not queue behind it (heartbeats, lossy topics).
        if not self._lossless_lock.acquire(blocking=n_lossless > 0):
            return
        try:
            self._check_open()
            if now - self._lossless_drained_at >= _DRAIN_EVERY_S:
                self._lossless_drained_at = now
                self._drain_subscriptions(self._lossless)
            if counts[key] > 0:
                self._send_bounded(topic, frames)
        finally:
            self._lossless_lock.release()

    def loan(self, topic: str, *specs: tuple[tuple[int, ...], Any]) -> list[Any]:
        """Writable arrays, one per ``(shape, dtype)``, to build the first array fields of
        the next message on ``topic`` in: on an ipc bus they lie in a shared-memory slot and
        ``publish`` then copies none of their bytes (``ShmWriter.loan``); else plain arrays."""
        with self._lossy_lock:
            self._check_open()
            got = None
            if self._shm is not None:
                got = self._shm.loan(topic, specs, self._readers(_topic_key(topic)))
        return got if got is not None else empty_arrays(specs)

    def _readers(self, key: bytes) -> int:
        """Subscriptions a message on ``key`` goes to, as last counted: ZeroMQ lossy ones,
        datagram ones (each also subscribes to ``key + INLINE``) and lossless ones."""
        lossy = self._counts[id(self._lossy)]
        return lossy[key] + lossy[key + INLINE] + self._counts[id(self._lossless)].get(key, 0)

    def _send_bounded(self, topic: str, frames: list[Any]) -> None:
        """Send on the lossless socket, waiting while an ``all`` subscriber is full, at
        most ``all_block_timeout_s``; then drop it for the full subscribers only (caller
        holds _lossless_lock)."""
        timeout_s = self.config.all_block_timeout_s
        deadline = time.monotonic() + timeout_s if timeout_s > 0 else None
        while True:
            try:
                self._lossless.send_multipart(frames, copy=False)
                return
            except zmq.Again:
                if self._closed:
                    raise BusClosed(f"bus {self.url!r} closed while publishing") from None
                self._drain_subscriptions(self._lossless)  # a subscriber that left unblocks us
            if deadline is not None and time.monotonic() >= deadline:
                break
        # Lossy for one send: delivered to every subscriber with room, dropped for the full
        # ones, whose pipes ZeroMQ then parks until their readers drain them.
        self._lossless.setsockopt(zmq.XPUB_NODROP, 0)
        try:
            self._lossless.send_multipart(frames, copy=False)
        finally:
            self._lossless.setsockopt(zmq.XPUB_NODROP, 1)
        self.stalled[topic] += 1
        self._stall_log.warning(
            "ZmqBus(%s): a subscriber of %s took nothing for %.3g s; dropped for it "
            "(%d so far on this topic)",
            self.url,
            topic,
            timeout_s,
            self.stalled[topic],
        )

    def _drain_subscriptions(self, sock: zmq.Socket) -> None:
        """Count (un)subscriptions reported by an XPUB socket (caller holds its lock)."""
        counts = self._counts[id(sock)]
        # plain ints: ``int & zmq.POLLIN`` would go through enum.Flag (~1 us per call, twice
        # per publish)
        while cast(int, sock.getsockopt(_EVENTS)) & _POLLIN:  # EVENTS is an int
            event = sock.recv()
            if self._notify is not None and self._notify.on_event(event):
                continue  # a subscription's datagram address (not counted twice)
            if event[:1] == b"\x01":
                counts[event[1:]] += 1
            elif event[:1] == b"\x00" and counts[event[1:]] > 0:
                counts[event[1:]] -= 1

    def subscriber_count(self, topic: str) -> int:
        """How many subscriptions (in any process) currently receive ``topic`` from this bus."""
        self._check_open()
        key = _topic_key(topic)
        total = 0
        for sock, lock in ((self._lossy, self._lossy_lock), (self._lossless, self._lossless_lock)):
            with lock:
                self._drain_subscriptions(sock)
                total += self._counts[id(sock)][key] + self._counts[id(sock)][key + INLINE]
        return total

    def wait_for_subscribers(self, topic: str, count: int = 1, timeout_s: float = 5.0) -> bool:
        """Wait until ``count`` subscriptions receive ``topic`` from this bus; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.subscriber_count(topic) < count:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def subscribe(self, topic: str, policy: QueuePolicy | str = "queue(8)") -> Subscription:
        self._check_open()
        key = _topic_key(topic)
        pol = QueuePolicy.parse(policy)

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
        request = [REQ, topic.encode(), struct.pack("<Q", next(self._req_ids)), *encode(msg)]
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
            if verb == REP:
                return decode(parts[2:])
            if verb == ERR:
                text = parts[2].bytes.decode(errors="replace") if len(parts) > 2 else "?"
                raise RuntimeError(f"service {topic!r} failed: {text}")
            if verb == NOSERVER:  # retry until the deadline: a server may register soon
                no_server, sent = True, False
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _request_socket(self) -> zmq.Socket:
        sock = getattr(self._local, "sock", None)
        if sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.sndhwm = sock.rcvhwm = 16
            sock.linger = 0
            curve_client(sock, self.curve, None)
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
        with self._lossy_lock:
            self._lossy.close()
            if self._shm is not None:
                self._shm.close()
            if self._notify is not None:
                self._notify.close()
        with self._lossless_lock:
            self._lossless.close()
        for sock in self._request_socks:
            sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.destroy(linger=0)

    def __repr__(self) -> str:
        return f"ZmqBus({self.url!r}, peers={len(self._peers)}, closed={self._closed})"
