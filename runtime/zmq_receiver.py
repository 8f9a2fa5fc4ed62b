"""The subscriber side of ``ZmqBus`` (``runtime/zmq_bus.py``): one receiver per subscription.

A ``Receiver`` owns the subscription's ZeroMQ SUB socket and, on a same-host bus with shared
memory, its datagram socket (``runtime/shm_notify.py``), and runs one thread that connects
to publishers as they come and go and puts what arrives into the subscription's bounded
``Mailbox`` (freshness policies: ``runtime/bus.py``).

Receiving on the consumer's thread
==================================

A hand-off from the receiver thread to the consumer costs a second thread wake-up and a GIL
switch on every message (tens of microseconds on 2 shared cores, more under load). So for
``latest`` / ``queue(n)`` subscriptions with a datagram socket, a consumer that waits in
``Subscription.get`` with an empty mailbox **reads the datagrams itself** (``DirectMailbox``):
it polls the datagram socket, resolves and decodes on its own thread and returns the
message. The receiver thread stops watching that socket while a consumer has been inside
``get`` within the last ``ZmqBusConfig.direct_grace_s`` and takes it over again after that
(a consumer busy elsewhere), so the mailbox keeps being filled and drained by policy as
before. A lock makes the two readers take turns; messages that ZeroMQ still carries
(``INLINE``, peers without shared memory) are put into the mailbox by the receiver thread,
which then wakes the waiting consumer with a one-byte datagram.

Waiting awake (``ZmqBusConfig.direct_spin_s``, off by default): for a stream whose last two
messages came within ``direct_spin_s`` of each other, a waiting consumer polls the datagram
socket without sleeping (yielding the core to anything else runnable) for up to that long
before it sleeps in the kernel. It saves the two wake-ups per message (the publisher's
``sendto`` waking the consumer, the consumer's sleep); slower streams (cameras at 30 Hz)
never spin. Measured on this project's 2 cores with a flat-out 640x480 stream (0.3 ms):
idle, the publisher's ``sendto`` got 2.4x cheaper (no wake-up to deliver) and delivered
frames/s rose 1.3-1.5x (5,900-6,300 -> 8,400-8,900); with other work running (load 2-20)
the spinning consumer lost its share of the cores, fell behind (full datagram queues,
ZeroMQ fallbacks) and delivered 0.5-1.0x. Hence off by default: turn it on where the
consumer has a core to itself.

Napping (``ZmqBusConfig.direct_nap_gap_s``, 0.3 ms, on by default; env ``ENGRAM_BUS_NAP_S``,
0 = off): for a stream whose last two messages came within ``direct_nap_gap_s`` of each
other, a waiting consumer first takes up to three naps (``direct_nap_s``, 5 us asked, ~70 us
here with the kernel's 50 us timer slack), looking at the datagram socket after each, before
it sleeps on the socket. While it naps nobody sleeps on the socket, so the publisher's
``sendto`` has nobody to wake: on this project's VM a cross-CPU wake-up cost the publisher
40-55 us of its own CPU per message (a ``sendto`` with nobody to wake: ~1.5 us), a third of a
flat-out 640x480 publisher's loop. The consumer pays a timer wake-up per nap instead (about
one nap per message at a few thousand frames/s) and at most a nap of latency; unlike
waiting awake it leaves the core to other work. When all three naps come up empty (the
stream slowed down, or its publisher shares the consumer's core, where a wake-up costs
little and naps only take the core from it), or one overruns to 0.25 ms (the core is busy
with other work: each nap would cost a scheduling delay), the consumer sleeps on the socket
and nobody naps for a while: 2 ms, doubled each time it recurs within 50 ms of the last
pause, up to 20 ms. (A fixed 20 ms pause cost a flat-out publisher a wake-up on 8-9% of its
frames on an idle VM, where a late nap is a one-off scheduling hiccup; on a busy core the
pauses grow to 20 ms within a few naps.) Slower streams (cameras at 30 Hz, the paced latency
benchmark) never nap. ``direct_spin_s``, when set, is used instead.

When several datagrams are waiting, only the newest ``depth`` (the policy's) are resolved
and decoded; the older ones are counted as received and dropped, exactly as the mailbox would
have counted them (their shared-memory slots were never pinned).

Kept: policies and their counters, ordering per publisher, ``all`` subscriptions (ZeroMQ's
lossless socket only, unchanged), a dead or slow consumer (the receiver thread takes over
within ``direct_grace_s``; until then at most ``net.unix.max_dgram_qlen`` datagrams wait in
the kernel; the publisher sends further ones over ZeroMQ, to this subscription's own
prefix, and the receiver thread delivers them).

Order across the two paths: frame 0 ends with the publisher id and its wire number
(``runtime/zmq_bus.py``); ``DirectMailbox`` delivers each publisher's messages in that order
and drops (counted as received and dropped) one older than a message already delivered,
before decoding it when it is a datagram. So a consumer never sees a publisher go back in
time, and after a full datagram queue it gets the newest message first.

Decode trust: a message resolved from shared memory is rebuilt without re-running its
constructor's checks (``codec.decode(validated=True)``) only when its datagram came from a
process of our own user (kernel credentials) and its ring file is ours with mode 0600
(``runtime/shm.py``); descriptors that arrive over ZeroMQ keep the shape checks and skip only
the value scans (``trusted``), inline payloads are fully checked.
"""

from __future__ import annotations

import os
import select
import threading
import time
from dataclasses import dataclass
from typing import Any

import zmq

from engram.runtime.bus import BusClosed, Mailbox, QueuePolicy, Subscription
from engram.runtime.codec import DecodeError, decode
from engram.runtime.messages import Message
from engram.runtime.shm import ShmDropped, ShmReader, is_descriptor
from engram.runtime.shm_notify import INLINE, NOTIFY_MARK, NotifyReceiver
from engram.runtime.zmq_curve import RateLimitedLog, curve_client

__all__ = ["DirectMailbox", "Peer", "Receiver"]

_MAX_PUBLISHERS_TRACKED = 1024  # publisher ids a subscription keeps a last seq / wire for
_MAX_BATCH = 64  # datagrams read in one go before looking at the rest of the loop again
_ORDER_TAIL = 16  # frame 0 ends with the publisher id (8 bytes) and its wire number (u64)


def _order(head: Any, klen: int) -> tuple[bytes, int] | None:
    """The publisher id and wire number at the end of frame 0 (``runtime/zmq_bus.py``), or
    None for a frame 0 without them (nothing to order by)."""
    view = head if type(head) is memoryview else memoryview(getattr(head, "buffer", head))
    if len(view) < klen + 1 + _ORDER_TAIL:
        return None
    tail = view[-_ORDER_TAIL:].tobytes()
    return tail[:8], int.from_bytes(tail[8:], "little")


@dataclass(frozen=True)
class Peer:
    """A bus's two publisher endpoints (from the broker's peer list) and its CURVE key."""

    lossy: str
    lossless: str
    key: bytes | None


class Receiver:
    """One subscription's SUB socket (and datagram socket) and thread.

    ``bus`` is the ``ZmqBus`` (config, context, CURVE, datagram sender, peer list)."""

    def __init__(self, bus: Any, sub: Subscription, key: bytes) -> None:
        self.bus = bus
        self.sub = sub
        self.key = key
        self.lossless = sub.policy.kind == "all"
        self.stop = threading.Event()
        self.log = RateLimitedLog(bus.config.log_interval_s)
        self.last_seq: dict[bytes, int] = {}  # lossless: publisher id -> last seq received
        self.shm = ShmReader(self.lossless)  # payloads same-host peers put in shared memory
        # same host with shared memory: datagrams to our own socket (its address travels in
        # a subscription); read by a waiting consumer or by the thread (module docstring)
        self.notify = NotifyReceiver() if bus._notify is not None and not self.lossless else None
        self.rx_lock = threading.Lock()  # one reader of the datagram socket at a time
        self.waiting = 0  # consumers inside get() reading the datagram socket
        self.last_attend = 0.0  # monotonic time a consumer last left get()
        self.grace_s = float(getattr(bus.config, "direct_grace_s", 0.005))
        self.spin_s = float(getattr(bus.config, "direct_spin_s", 0.0))
        self.nap_gap_s = float(getattr(bus.config, "direct_nap_gap_s", 0.0))
        self.nap_s = float(getattr(bus.config, "direct_nap_s", 0.0))
        # a stream faster than this is waited for without sleeping on the socket (spinning
        # when asked for, else napping; module docstring, "Waiting awake", "Napping")
        self.fast_s = self.spin_s if self.spin_s > 0 else self.nap_gap_s if self.nap_s > 0 else 0.0
        self.nap_off_until = 0.0  # monotonic time before which a consumer does not nap
        self.nap_pause_s = 0.0  # how long the last such pause was
        self.last_got = 0.0  # monotonic time get() last returned a message
        self.gap_s = 1.0  # time between its last two returns (the stream's period)
        self.notify_closed = False
        # ZeroMQ messages were put since the consumer last read the datagram socket: what
        # waits there is likely older (stale), so the consumer reads it before the mailbox
        self.overtaken = False
        if self.notify is not None:
            sub.mailbox = DirectMailbox(sub.policy, self)
        self.thread = threading.Thread(target=self._run, name=f"zmq-sub:{sub.topic}", daemon=True)

    # ---- the thread ---------------------------------------------------------------
    def _run(self) -> None:
        bus, cfg = self.bus, self.bus.config
        sock = bus._ctx.socket(zmq.SUB)
        sock.rcvhwm = cfg.recv_hwm
        sock.linger = 0
        if bus.curve is not None:
            curve_client(sock, bus.curve, None)
        notify = self.notify
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        watching = False  # the datagram socket is in the poller
        if notify is not None:
            sock.subscribe(self.key + INLINE)
            sock.subscribe(notify.subscription(self.key))
        else:
            sock.subscribe(self.key)
        connected: dict[str, Peer] = {}
        seen_version = -1
        poll_ms = max(1, int(cfg.poll_s * 1000))
        grace_ms = max(1, int(self.grace_s * 1000))
        try:
            while not self.stop.is_set():
                if bus._peers_version != seen_version:
                    seen_version = bus._peers_version
                    self._sync(sock, connected, bus._peer_snapshot())
                timeout = poll_ms
                if notify is not None:
                    want = not self._attended()
                    if want != watching:
                        if want:
                            poller.register(notify.fileno(), zmq.POLLIN)
                        else:
                            poller.unregister(notify.fileno())
                        watching = want
                    if not watching:
                        timeout = grace_ms  # take the socket over once nobody waits
                if not poller.poll(timeout):
                    continue
                if watching and not self.waiting and self.rx_lock.acquire(blocking=False):
                    try:
                        self.pump()
                    finally:
                        self.rx_lock.release()
                delivered = 0
                batch: list[list[Any]] = []  # (datagram subscriptions: see _deliver_batch)
                for _ in range(256):  # then look at the peer list again
                    if self.stop.is_set():
                        break
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    if notify is not None:
                        batch.append(frames)
                        continue
                    if not self.lossless and self._not_ours(frames[0]):
                        continue  # another subscription's datagram fallback (its prefix)
                    self._deliver(frames[0], frames[1:], False)
                    delivered += 1
                if batch:
                    delivered += self._deliver_batch(batch)
                if delivered and self.waiting and notify is not None:
                    notify.wake()  # a consumer waits on the datagram socket, not the mailbox
        except zmq.ZMQError as exc:
            if not self.stop.is_set():
                self.log.warning("subscription %s: socket error %s", self.sub.topic, exc)
        finally:
            sock.close(linger=0)
            if notify is not None:
                with self.rx_lock:
                    self.notify_closed = True
                    notify.close()
            self.shm.close()

    def _not_ours(self, head: Any) -> bool:
        """A datagram fallback for another subscription of this topic (``topic\\0`` +
        ``NOTIFY_MARK`` + its address...): our plain ``topic\\0`` prefix matches it too."""
        klen = len(self.key)
        return memoryview(head.buffer)[klen : klen + len(NOTIFY_MARK)] == NOTIFY_MARK

    def _attended(self) -> bool:
        """A consumer reads the datagram socket now or did within ``grace_s``."""
        return self.waiting > 0 or time.monotonic() - self.last_attend < self.grace_s

    def _sync(self, sock: zmq.Socket, connected: dict[str, Peer], peers: set[Peer]) -> None:
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

    # ---- reading ------------------------------------------------------------------
    def pump(self, take: bool = False) -> tuple[int, Message | None]:
        """Read every waiting datagram (caller holds ``rx_lock``) and deliver the newest
        ``depth`` of them; the older ones are counted as received and dropped, as the
        mailbox would have. Returns how many datagrams (wake-ups included) were read and,
        with ``take`` (a consumer in ``get``), the oldest delivered message when the mailbox
        held nothing older: handed back directly instead of through the mailbox."""
        notify = self.notify
        mailbox = self.sub.mailbox
        if notify is None or self.notify_closed or not isinstance(mailbox, DirectMailbox):
            return 0, None
        batch: list[tuple[list[Any], bool]] = []
        read = 0
        while read < _MAX_BATCH:
            if read and not notify.pending():
                break  # (a poll, not a failing recv: no exception per message)
            try:
                got = notify.recv()
            except DecodeError as exc:
                self._undecodable(exc)
                read += 1
                continue
            except OSError:
                break  # closed under us
            if got is None:
                break
            read += 1
            if got[0]:
                batch.append(got)
        return read, self._offer_newest(mailbox, batch, take)[1]

    def _deliver_batch(self, batch: list[list[Any]]) -> int:
        """ZeroMQ messages of a datagram subscription (``INLINE``, or sent over ZeroMQ
        because its datagram queue was full), read together, to the mailbox as ``pump``
        does for datagrams. Returns how many were put."""
        mailbox = self.sub.mailbox
        if not isinstance(mailbox, DirectMailbox):
            return 0
        put, _ = self._offer_newest(mailbox, [(frames, False) for frames in batch], False)
        self.overtaken = self.overtaken or put > 0
        return put

    def _offer_newest(
        self, mailbox: DirectMailbox, batch: list[tuple[list[Any], bool]], take: bool
    ) -> tuple[int, Message | None]:
        """Messages read together (frames, from our own publisher): stale ones (older than
        one delivered from their publisher) and all but the newest ``depth`` are counted as
        received and dropped, undecoded; the rest are decoded and offered in order. Returns
        (how many were put, and with ``take`` the message handed straight back: the oldest
        put when the mailbox held nothing older)."""
        klen, keep, stale = len(self.key), [], 0
        for frames, ours in batch:
            order = _order(frames[0], klen)
            if order is not None and mailbox.stale(order):
                stale += 1  # older than one delivered on the other path: not even decoded
            else:
                keep.append((frames, ours, order))
        skip = max(0, len(keep) - self.sub.policy.depth)
        if skip or stale:
            mailbox.skipped(skip + stale)
        put, taken = 0, None
        for frames, ours, order in keep[skip:]:
            msg = self._decode(frames[1:], ours)
            if msg is None:
                continue
            put += 1
            # handed straight back when nothing older is held; else by policy, in order
            if mailbox.offer(msg, order, take and taken is None):
                taken = msg
        return put, taken

    def _deliver(self, head: Any, parts: list[Any], ours: bool) -> None:
        mailbox = self.sub.mailbox
        msg = self._decode(parts, ours)
        if msg is None:
            return
        if self.lossless:  # frame 0: topic NUL, tag byte, publisher id, wire number
            head = getattr(head, "bytes", None) or bytes(head)
            at = len(self.key) + 1
            self._count_gap(head[at : at + 8], msg.seq)
        mailbox.put(msg)  # "all": blocks here while full = backpressure

    def _decode(self, parts: list[Any], ours: bool) -> Message | None:
        """The message of a datagram's or ZeroMQ message's frames after frame 0, or None
        (counted: a slot reused first is a drop, bad input a decode error)."""
        try:
            if parts and is_descriptor(parts[0]):
                views = self.shm.resolve(parts)  # views of a same-host ring
                # built and validated by a publisher of our own user, in our own ring:
                # rebuilt without re-running the checks (datagrams only, see the docstring)
                msg = decode(views, trusted=True, validated=ours)
            else:
                msg = decode(parts)
        except ShmDropped:  # its slot was reused first: a drop (lossless: seen as a gap)
            if not self.lossless:
                self.sub.mailbox.dropped += 1
            return None
        except DecodeError as exc:
            self._undecodable(exc)
            return None
        return msg

    def _undecodable(self, exc: Exception) -> None:
        self.sub.decode_errors += 1
        self.log.warning(
            "subscription %s: dropped an undecodable message (%d so far): %s",
            self.sub.topic,
            self.sub.decode_errors,
            exc,
        )

    def _count_gap(self, publisher: bytes, seq: int) -> None:
        """Messages a publisher dropped for us (it timed out on our full queue) show as a
        gap in its sequence numbers: count them in ``Subscription.lost``."""
        if len(publisher) != 8 or seq <= 0:
            return  # not one of our buses (or a replayed message without a seq)
        last = self.last_seq.get(publisher)
        if last is not None and seq > last + 1:
            self.sub.lost += seq - last - 1
        if last is None or seq > last:
            if last is None and len(self.last_seq) >= _MAX_PUBLISHERS_TRACKED:
                self.last_seq.clear()
            self.last_seq[publisher] = seq


_NAP_TRIES = 3  # naps a waiting consumer takes before it sleeps on the socket ("Napping")
_NAP_BACKOFF_S = (0.002, 0.02)  # ... and then how long it does not nap: first, at most
_NAP_RECUR_S = 0.05  # a pause within this long of the last one's end is twice as long
_NAP_LATE_S = 0.00025  # a nap this long (~70 us when the core is free) ends napping too


class DirectMailbox(Mailbox):
    """A ``latest`` / ``queue(n)`` mailbox whose ``get`` reads the subscription's datagram
    socket on the caller's thread while it would otherwise wait (module docstring)."""

    def __init__(self, policy: QueuePolicy, receiver: Receiver) -> None:
        super().__init__(policy)
        self._receiver = receiver
        self._count_lock = threading.Lock()
        # each consumer thread's poll object on the datagram socket, made once, not per
        # get (select.poll objects refuse concurrent poll() calls: one per thread)
        self._polls = threading.local()
        # publisher id -> highest wire number delivered (datagrams and ZeroMQ may overtake
        # each other: runtime/shm_notify.py, "Ordering")
        self._last: dict[bytes, int] = {}

    def stale(self, order: tuple[bytes, int]) -> bool:
        """Whether a message from publisher ``order[0]`` with wire number ``order[1]`` is
        older than one already delivered from it (a hint without the lock: the number only
        grows; ``offer`` decides)."""
        last = self._last.get(order[0])
        return last is not None and order[1] <= last

    def offer(self, msg: Message, order: tuple[bytes, int] | None, take: bool) -> bool:
        """Deliver ``msg`` in its publisher's order: older than one already delivered, it
        is counted as received and dropped; with ``take`` and nothing older held, it is
        counted as received and True is returned (the caller hands it out); else it is
        put by policy."""
        with self._cond:
            if order is not None:
                pub, wire = order
                last = self._last.get(pub)
                if last is not None and wire <= last:
                    self.received += 1
                    self.dropped += 1
                    return False
                if last is None and len(self._last) >= _MAX_PUBLISHERS_TRACKED:
                    self._last.clear()
                self._last[pub] = wire
            if take and not self._items and not self._closed:
                self.received += 1
                return True
            self.put(msg)  # (the condition's lock is reentrant)
            return False

    def skipped(self, n: int) -> None:
        """``n`` messages received and dropped (policy, stale) without being decoded."""
        with self._cond:
            self.received += n
            self.dropped += n

    def get(self, timeout_s: float | None = None) -> Message | None:
        r = self._receiver
        notify = r.notify
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        slice_s = max(0.001, float(r.bus.config.poll_s))
        while True:
            if r.overtaken and notify is not None and not r.notify_closed:
                # Datagrams queued behind messages that came over ZeroMQ are stale: read
                # them now (counted, not decoded) so the kernel queue empties and the next
                # messages come as datagrams again instead of over ZeroMQ (a full queue
                # would keep sending them there while the mailbox is never empty).
                r.overtaken = False
                with r.rx_lock:
                    r.pump()
            with self._cond:
                if self._items:
                    msg = self._items.popleft()
                    self._cond.notify_all()
                    if r.fast_s:  # (the stream's period: see "Waiting awake")
                        now = time.monotonic()
                        r.gap_s, r.last_got = now - r.last_got, now
                    return msg
                if self._closed:
                    raise BusClosed("subscription closed")
            left = None if deadline is None else deadline - time.monotonic()
            if notify is None or r.notify_closed or r.stop.is_set():
                return super().get(left)
            with self._count_lock:
                r.waiting += 1
            try:
                wait_s = slice_s if left is None else min(max(left, 0.0), slice_s)
                try:  # (returns at once when datagrams are already waiting)
                    poll = getattr(self._polls, "poll", None)
                    if poll is None:
                        poll = self._polls.poll = select.poll()
                        poll.register(notify.fileno(), select.POLLIN)
                    ready: list = []
                    now = time.monotonic()
                    if r.gap_s < r.fast_s and wait_s > 0 and now >= r.nap_off_until:
                        # a fast stream (the last message came within fast_s of the one
                        # before): look at the socket between a few short naps (or spin, up
                        # to spin_s) instead of sleeping on it, so that the publisher's
                        # sendto has nobody to wake (module docstring, "Napping")
                        until = now + min(r.fast_s, wait_s)
                        ready = poll.poll(0)
                        if r.spin_s:
                            while not ready and time.monotonic() < until:
                                os.sched_yield()  # (others that want this core run first)
                                ready = poll.poll(0)
                        else:
                            ready = self._nap(r, poll, ready, until)
                    if not ready:
                        ready = poll.poll(max(1, int(wait_s * 1000)) if wait_s > 0 else 0)
                except (OSError, ValueError):
                    continue  # closed under us: the next turn sees it
                if not ready:
                    if left is not None and left <= 0:
                        return None
                    continue
                with r.rx_lock:  # the thread may be reading now: take turns
                    _, msg = r.pump(take=True)
                if msg is not None:
                    if r.fast_s:
                        now = time.monotonic()
                        r.gap_s, r.last_got = now - r.last_got, now
                    return msg
            finally:
                with self._count_lock:
                    r.waiting -= 1
                    r.last_attend = time.monotonic()

    @staticmethod
    def _nap(r: Receiver, poll: Any, ready: list, until: float) -> list:
        """Up to ``_NAP_TRIES`` naps, looking at the socket after each ("Napping"). When
        they all come up empty (not that fast now, or its publisher shares our core: a
        wake-up is cheap there and naps only take the core from it), or one overruns (the
        core is busy with other work: each nap would cost a scheduling delay), the caller
        sleeps on the socket and nobody naps for ``_NAP_BACKOFF_S``."""
        for _ in range(_NAP_TRIES):
            if ready:
                return ready
            start = time.monotonic()
            if start >= until:
                return ready
            time.sleep(r.nap_s)
            ready = poll.poll(0)
            if time.monotonic() - start > _NAP_LATE_S:
                DirectMailbox._pause_naps(r, start)
                return ready
        if not ready:
            DirectMailbox._pause_naps(r, time.monotonic())
        return ready

    @staticmethod
    def _pause_naps(r: Receiver, now: float) -> None:
        """No naps for a while: ``_NAP_BACKOFF_S[0]``, twice the last pause when it recurs
        within ``_NAP_RECUR_S`` of the last pause's end, at most ``_NAP_BACKOFF_S[1]``."""
        shortest, longest = _NAP_BACKOFF_S
        recurs = now - r.nap_off_until < _NAP_RECUR_S
        r.nap_pause_s = min(2 * r.nap_pause_s, longest) if recurs else shortest
        r.nap_off_until = now + r.nap_pause_s

    def drain(self) -> list[Message]:
        """Every held message, after reading the datagrams waiting in the socket."""
        r = self._receiver
        if r.notify is not None and not r.notify_closed:
            with r.rx_lock:
                r.pump()
        return super().drain()

    def __len__(self) -> int:
        """Held messages, or 1 when none is held but a datagram waits to be read (callers
        that wait for a subscription to drain, e.g. a node's flush, see it as pending)."""
        n = len(self._items)
        notify = self._receiver.notify
        if n or notify is None or self._receiver.notify_closed:
            return n
        try:
            poll = select.poll()
            poll.register(notify.fileno(), select.POLLIN)
            return 1 if poll.poll(0) else 0
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        super().close()
        notify = self._receiver.notify
        if notify is not None and not self._receiver.notify_closed:
            notify.wake()  # a consumer polling the socket sees the close now
