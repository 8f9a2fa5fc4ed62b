"""The live page's web app (FastAPI) and a small uvicorn server that runs it in a thread.

Routes (all served locally; the page loads no external asset)::

    GET  /                         the page (static/index.html, app.js, style.css)
    GET  /static/...               its script and style sheet
    WS   /ws                       live updates: JSON {"type": "update", ...} whenever
                                   something changed (at most ``update_hz`` per second,
                                   at least once a second): frame info, detections, new
                                   transcript entries and timeline events since the
                                   client's cursor, stats, health, map version
    GET  /api/state                everything at once (JSON)
    GET  /api/frame.jpg            the latest frame (JPEG; 404 before the first)
    GET  /api/thumbnails/{id}.jpg  a keyframe thumbnail
    GET  /api/detections           boxes + labels of the latest percept
    GET  /api/transcript           the running transcript (``?after=<id>``)
    GET  /api/timeline             memories as they were written (``?after=<id>``)
    GET  /api/map                  top-down map: cells, trail, objects, places, edges
    GET  /api/health               per-node heartbeats (fps, drops, latency per stage)
    GET  /api/ask?q=...&k=5        a question -> MemoryQuery over the bus -> recall (JSON)
    WS   /ws/audio                 the page's microphone (only with ``engram live --mic browser``)

``WebServer(app, host=..., port=0)`` binds first (port 0 = a free port, see
``.port``), then serves from a daemon thread; ``stop()`` shuts it down.

Access. On a loopback address (127.0.0.0/8, ::1, localhost) the page is open, as any
local tool. Bound anywhere else it requires a token: a random one unless given
(``WebServer(token=...)``), printed at start as part of ``.url``
(``http://HOST:PORT/?token=...``). Every route, the static files and the WebSocket check it
(``TokenGate``): from ``?token=``, an ``Authorization: Bearer`` header, or the
``engram_token`` cookie that opening the page with ``?token=`` sets (so the page's own
requests carry it). Without it: 401 (HTTP) or a refused handshake (WebSocket).

WebSocket protocol. The server pushes updates; a client may send only small text
messages that are JSON objects with ``"type": "ping"`` (answered ``{"type": "pong"}``).
Anything else (binary data, non-JSON, another type, over ``WS_MAX_MESSAGE_BYTES``) is a
protocol violation: the server closes that connection (code 1008, or 1009 for size).

Microphone. With ``engram live --mic browser`` (``LiveHubConfig.browser_mic_topic`` set) the
page's "Talk" button captures the microphone (getUserMedia, an AudioContext at 16 kHz, an
AudioWorklet) and streams it on ``/ws/audio``: first ``{"type": "start", "sample_rate_hz":
16000}``, then binary messages of little-endian 16-bit mono PCM (100 ms each, within
``WS_MAX_MESSAGE_BYTES``), ``{"type": "stop"}`` or closing to end. Each block is published
as an ``AudioChunk`` (source "browser", stamped by the samples received since the start);
the end closes the utterance being spoken. Without ``--mic browser`` the socket is closed
at once (1008); anything else on it also closes it (1008).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route functions'
# annotations at runtime, and their types (WebSocket, ...) are imported inside make_app.
import asyncio
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import sys
import threading
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np

from engram.runtime.apps.web.hub import LiveHub

__all__ = [
    "STATIC_DIR",
    "WS_MAX_MESSAGE_BYTES",
    "TokenGate",
    "WebServer",
    "is_loopback",
    "make_app",
]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
WS_MAX_MESSAGE_BYTES = 4096  # largest message a client may send on /ws (see the module doc)
TOKEN_COOKIE = "engram_token"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address) is reachable only from this machine."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name or wildcard ("", "0.0.0.0" is not loopback either)


class TokenGate:
    """ASGI middleware: every HTTP request and WebSocket handshake must carry ``token``
    (query ``?token=``, ``Authorization: Bearer``, or the ``engram_token`` cookie, which a
    request with the right ``?token=`` sets). Written here because it is a dozen lines of
    ASGI and Starlette ships no token middleware."""

    def __init__(self, app: Any, token: str) -> None:
        if not token:
            raise ValueError("TokenGate needs a non-empty token")
        self.app = app
        self.token = token

    def _presented(self, scope: dict[str, Any]) -> tuple[str, bool]:
        """(token the request carries, whether it came in the query string)."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if query.get("token"):
            return query["token"][0], True
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip(), False
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header carries no token
            return "", False
        morsel = cookie.get(TOKEN_COOKIE)
        return (morsel.value if morsel is not None else ""), False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given, in_query = self._presented(scope)
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})  # handshake refused
                return
            body = json.dumps(
                {"error": "this page needs its token: open the URL printed at start (?token=...)"}
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "http" and in_query:
            cookie = f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict".encode()

            async def send_with_cookie(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    message = {
                        **message,
                        "headers": [*message.get("headers", []), (b"set-cookie", cookie)],
                    }
                await send(message)

            await self.app(scope, receive, send_with_cookie)
            return
        await self.app(scope, receive, send)


def make_app(hub: LiveHub, *, update_hz: float = 10.0, title: str = "Engram live") -> Any:
    """The FastAPI app serving ``hub`` (see the module docstring for the routes)."""
    from fastapi import FastAPI, HTTPException, Query, WebSocket, WebSocketDisconnect
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles

    if not update_hz > 0:
        raise ValueError(f"update_hz must be > 0, got {update_hz}")
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    no_store = {"Cache-Control": "no-store"}

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=no_store)

    @app.get("/api/state")
    def state() -> JSONResponse:
        return JSONResponse(hub.snapshot(), headers=no_store)

    @app.get("/api/frame.jpg")
    def frame() -> Response:
        out = hub.frame_jpeg()
        if out is None:
            raise HTTPException(404, "no frame yet")
        seq, data = out
        return Response(
            data, media_type="image/jpeg", headers={**no_store, "X-Frame-Seq": str(seq)}
        )

    @app.get("/api/thumbnails/{thumb_id}.jpg")
    def thumbnail(thumb_id: int) -> Response:
        data = hub.thumbnail_jpeg(thumb_id)
        if data is None:
            raise HTTPException(404, f"no thumbnail {thumb_id} (only the newest are kept)")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/detections")
    def detections() -> JSONResponse:
        return JSONResponse({"frame": hub.frame_info(), "detections": hub.detections()})

    @app.get("/api/transcript")
    def transcript(after: int = 0) -> JSONResponse:
        return JSONResponse({"entries": hub.transcript(after_id=after)}, headers=no_store)

    @app.get("/api/timeline")
    def timeline(after: int = 0) -> JSONResponse:
        return JSONResponse({"events": hub.timeline(after_id=after)}, headers=no_store)

    @app.get("/api/map")
    def map_() -> JSONResponse:  # sync: the spatial query runs in the thread pool
        return JSONResponse(hub.map(), headers=no_store)

    @app.get("/api/health")
    def health() -> JSONResponse:
        return JSONResponse({"stats": hub.stats(), "nodes": hub.nodes()}, headers=no_store)

    @app.get("/api/ask")
    def ask(
        q: str = Query("", max_length=1000, description="the question, in words"),
        k: int = Query(0, ge=0, le=50, description="hits wanted (0 = the hub's default)"),
    ) -> JSONResponse:  # sync: bus.request blocks, FastAPI runs it in its thread pool
        return JSONResponse(hub.ask(q, top_k=k or None), headers=no_store)

    async def read_client(websocket: WebSocket) -> None:
        """Enforce the client side of the protocol (module doc); returns when the
        client left or broke it (then the connection is closed)."""
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            problem = ""
            if text is None:
                problem = "binary data"
            elif len(text.encode()) > WS_MAX_MESSAGE_BYTES:
                problem = "message too large"
            else:
                try:
                    parsed = json.loads(text)
                except ValueError:
                    parsed = None
                if not (isinstance(parsed, dict) and parsed.get("type") == "ping"):
                    problem = "not a ping"
            if problem:
                log.info("websocket: protocol violation (%s); closing", problem)
                await websocket.close(code=1009 if "large" in problem else 1008, reason=problem)
                return
            await websocket.send_json({"type": "pong"})

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        tasks = [
            asyncio.ensure_future(read_client(websocket)),
            asyncio.ensure_future(push_updates(websocket)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()

    @app.websocket("/ws/audio")
    async def ws_audio(websocket: WebSocket) -> None:
        """The page's microphone (module doc, "Microphone"): a start message, then PCM."""
        await websocket.accept()
        if not hub.config.browser_mic_topic:
            await websocket.close(code=1008, reason="the microphone is not the page here")
            return
        rate, n, t0_ns = 0, 0, 0
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text, data = message.get("text"), message.get("bytes")
                problem = ""
                if text is not None:
                    try:
                        parsed = json.loads(text)
                    except ValueError:
                        parsed = None
                    if isinstance(parsed, dict) and parsed.get("type") == "start":
                        rate = parsed.get("sample_rate_hz")
                        if not isinstance(rate, int) or not 8000 <= rate <= 48000:
                            problem = "start: sample_rate_hz must be an integer in 8000..48000"
                        n, t0_ns = 0, time.time_ns()
                    elif isinstance(parsed, dict) and parsed.get("type") == "stop":
                        break
                    else:
                        problem = "expected a start or stop message"
                elif not rate:
                    problem = "audio before the start message"
                elif data is None or len(data) % 2:
                    problem = "audio must be 16-bit PCM (an even number of bytes)"
                if problem:
                    log.info("websocket audio: protocol violation (%s); closing", problem)
                    await websocket.close(code=1008, reason=problem)
                    rate = 0
                    break
                if data:
                    pcm = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
                    hub.push_audio(pcm, rate, t0_ns + round(n * 1e9 / rate))
                    n += len(pcm)
        except (WebSocketDisconnect, RuntimeError, asyncio.CancelledError):
            pass
        finally:
            if rate and n:  # the page stopped: the utterance being spoken is closed
                hub.push_audio(
                    np.zeros(0, np.float32), rate, t0_ns + round(n * 1e9 / rate), end=True
                )

    async def push_updates(websocket: WebSocket) -> None:
        period = 1.0 / update_hz
        loop = asyncio.get_running_loop()
        transcript_after = timeline_after = 0
        sent_version, last_sent = -1, 0.0
        try:
            while True:
                version = hub.version
                if version == sent_version and time.monotonic() - last_sent < 1.0:
                    # nothing new: wait for a change off the event loop (bounded)
                    await loop.run_in_executor(None, hub.wait_for_change, version, 0.5)
                    continue
                new_transcript = hub.transcript(after_id=transcript_after)
                new_events = hub.timeline(after_id=timeline_after)
                if new_transcript:
                    transcript_after = new_transcript[-1]["id"]
                if new_events:
                    timeline_after = new_events[-1]["id"]
                await websocket.send_json(
                    {
                        "type": "update",
                        "version": version,
                        "frame": hub.frame_info(),
                        "detections": hub.detections(),
                        "transcript": new_transcript,
                        "events": new_events,
                        "stats": hub.stats(),
                        "health": hub.nodes(),
                        "map_version": hub.map_version,
                    }
                )
                sent_version, last_sent = version, time.monotonic()
                await asyncio.sleep(period)
        except (WebSocketDisconnect, RuntimeError, asyncio.CancelledError):
            return
        except Exception as exc:  # noqa: BLE001 - one client's failure must not stop the server
            log.debug("websocket closed: %s", exc)

    return app


class WebServer:
    """uvicorn in a daemon thread. ``port=0`` picks a free port (read ``.port`` after
    ``start()``). Use as a context manager or call ``start()`` / ``stop()``.

    ``token``: required by every request (see Access in the module doc); None = a random
    one when ``host`` is not loopback, none on loopback; "" = never (not advised)."""

    def __init__(
        self, app: Any, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None
    ) -> None:
        self.app = app
        self.host = host
        self.port = int(port)
        if token is None:
            token = "" if is_loopback(host) else secrets.token_urlsafe(18)
        self.token = token
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def start(self, *, timeout_s: float = 10.0) -> None:
        """Bind (``OSError`` naming the address when it is taken) and serve."""
        import uvicorn

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise OSError(
                f"cannot serve the page on {self.host}:{self.port} ({exc.strerror or exc}); "
                "choose another --port (0 = any free port)"
            ) from None
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self._sock = sock
        app = TokenGate(self.app, self.token) if self.token else self.app
        config = uvicorn.Config(
            app,
            ws_max_size=WS_MAX_MESSAGE_BYTES,  # a bigger client message closes it (1009)
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            ws_ping_interval=None,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="web-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the web server on {self.url} failed to start")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the web server on {self.url} did not start in {timeout_s} s")
            time.sleep(0.02)
        if self.token:
            print(
                f"engram: the page is served on {self.host} (not loopback) and needs its "
                f"token: {self.url}",
                file=sys.stderr,
                flush=True,
            )

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "WebServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
