"""The ZeroMQ bus broker: directory of publisher endpoints and router of requests.

One process per bus URL serves it (``serve_broker(url)``; the launcher does for graphs
with process groups), every ``ZmqBus`` talks to it (see ``engram.runtime.zmq_bus`` for the
topology and protocol). Also the bus URLs (``parse_url``) and the ipc socket files
(``sweep_stale_ipc``) both sides share.

Run a standalone broker with ``python -m engram.runtime.zmq_broker URL``.
"""

from __future__ import annotations

import collections
import glob
import itertools
import logging
import os
import re
import socket
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import msgpack
import zmq

from engram.runtime.zmq_curve import (
    CurveConfig,
    RateLimitedLog,
    curve_server,
    start_authenticator,
)

__all__ = ["Broker", "BusUrl", "parse_url", "serve_broker", "sweep_stale_ipc"]

log = logging.getLogger(__name__)

# Broker protocol verbs (first frame after the routing id).
HELLO, PEERS, BYE = b"HELLO", b"PEERS", b"BYE"
SERVE, UNSERVE = b"SERVE", b"UNSERVE"
REQ, REP, ERR, NOSERVER = b"REQ", b"REP", b"ERR", b"NOSERVER"
_IPC_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux


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
class BusUrl:
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


def parse_url(url: str) -> BusUrl:
    if url.startswith("ipc://"):
        path = url[len("ipc://") :]
        if not path:
            raise ValueError(f"bad bus URL {url!r}: ipc:// needs a path, e.g. ipc:///tmp/engram")
        path = os.path.abspath(path)
        check_ipc_path(path, url)
        return BusUrl("ipc", path=path)
    if url.startswith("tcp://"):
        rest = url[len("tcp://") :]
        host, sep, port = rest.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad bus URL {url!r}: use tcp://HOST:PORT with a port 1..65535")
        return BusUrl("tcp", host=host.strip("[]"), port=int(port))
    raise ValueError(f"bad bus URL {url!r}: ZmqBus takes ipc://PATH or tcp://HOST:PORT")


def check_ipc_path(path: str, url: str, suffix_len: int = 0) -> None:
    size = len(os.fsencode(path)) + suffix_len
    if size > _IPC_PATH_MAX:
        raise ValueError(
            f"bus URL {url!r}: unix socket path {path!r} is too long ({size} bytes with the "
            f"per-process suffix, max {_IPC_PATH_MAX}); use a shorter path such as /tmp/engram"
        )


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
        self._parsed = parse_url(url)
        self.expiry_s = expiry_s
        self._ctx = zmq.Context()
        self._auth = start_authenticator(self._ctx, curve)
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.router_mandatory = True
        self._sock.sndhwm = self._sock.rcvhwm = 1000
        self._sock.linger = 0
        curve_server(self._sock, curve)
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
        self._log = RateLimitedLog(5.0)
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
        if verb == HELLO:
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
                self._send([sender, PEERS, self._peer_list()])
        elif verb == BYE:
            if self._peers.pop(sender, None) is not None:
                self._push_peers()
        elif verb == SERVE and len(frames) == 3:
            self._services[frames[2].bytes][sender] = now
        elif verb == UNSERVE and len(frames) == 3:
            self._services.get(frames[2].bytes, {}).pop(sender, None)
        elif verb == REQ and len(frames) >= 4:
            topic, req_id = frames[2].bytes, frames[3].bytes
            servers = self._services.get(topic, {})
            while servers:
                ids = list(servers)
                server = ids[next(self._rr) % len(ids)]
                if self._send([server, REQ, sender, req_id, *frames[4:]]):
                    return
                servers.pop(server, None)  # dead or jammed: forget it, try another
            self._send([sender, NOSERVER, req_id])
        elif verb in (REP, ERR) and len(frames) >= 4:
            client, req_id = frames[2].bytes, frames[3].bytes
            self._send([client, verb, req_id, *frames[4:]])
        else:
            raise ValueError(f"unknown verb {verb[:16]!r} or wrong frame count {len(frames)}")

    def _peer_list(self) -> bytes:
        # msgpack ships no stubs; packb always returns bytes (inferred as ``... | None``)
        return cast(bytes, msgpack.packb([entry for entry, _ in self._peers.values()]))

    def _push_peers(self) -> None:
        listing = self._peer_list()
        for peer in list(self._peers):
            self._send([peer, PEERS, listing])

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


def _main(argv: list[str] | None = None) -> int:
    import argparse
    import signal

    parser = argparse.ArgumentParser(
        prog="python -m engram.runtime.zmq_broker",
        description="Run a standalone Engram bus broker.",
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
