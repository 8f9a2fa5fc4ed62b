"""The live page's server under hostile clients (issue 18, defect 8): a token whenever it
is not on loopback, and a WebSocket closed on protocol violations."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from engram.runtime.apps.web import LiveHub, LiveHubConfig, WebServer, make_app
from engram.runtime.apps.web.app import is_loopback
from engram.runtime.bus import InProcBus


@pytest.fixture
def hub() -> Iterator[LiveHub]:
    bus = InProcBus("web-security")
    hub = LiveHub(LiveHubConfig(heartbeat_hz=0.0, map_refresh_s=0.0), bus=bus, name="web")
    hub.start()
    yield hub
    hub.stop()
    bus.close()


def _status(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def test_loopback_needs_no_token_anything_else_does() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("")


def test_a_server_off_loopback_requires_its_token_on_page_api_and_websocket(
    hub: LiveHub, capsys: pytest.CaptureFixture
) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    server = WebServer(make_app(hub), host="0.0.0.0", port=0)
    server.start()
    try:
        token = server.token
        assert len(token) >= 20 and server.url.endswith(f"/?token={token}")
        assert server.url in capsys.readouterr().err  # printed at start
        base = f"http://127.0.0.1:{server.port}/"
        for path in ("", "api/state", "api/health", "api/ask?q=mug", "static/app.js"):
            assert _status(base + path)[0] == 401, path  # open to anyone before
            assert _status(base + path + ("&" if "?" in path else "?") + "token=nope")[0] == 401
        code, headers = _status(f"{base}?token={token}")
        assert code == 200 and "engram_token=" in headers.get("set-cookie", "")
        assert _status(base + "api/state", {"Cookie": f"engram_token={token}"})[0] == 200
        assert _status(base + "api/state", {"Authorization": f"Bearer {token}"})[0] == 200
        ws_url = f"ws://127.0.0.1:{server.port}/ws"
        with pytest.raises(InvalidStatus):
            with connect(ws_url, open_timeout=10):
                pass
        with connect(f"{ws_url}?token={token}", open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "update"
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("send", "code"),
    [
        (b"\x00\x01binary", 1008),
        ("hello", 1008),
        (json.dumps({"type": "subscribe", "all": True}), 1008),
        ("x" * 10_000, 1009),
    ],
)
def test_protocol_violations_close_the_websocket(hub: LiveHub, send, code) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    server = WebServer(make_app(hub), host="127.0.0.1", port=0)
    server.start()
    try:
        with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "update"
            ws.send(json.dumps({"type": "ping"}))  # the one thing a client may send
            deadline = time.monotonic() + 10
            while json.loads(ws.recv(timeout=10))["type"] != "pong":
                assert time.monotonic() < deadline
            ws.send(send)
            with pytest.raises(ConnectionClosed) as closed:  # ignored before: stayed open
                while True:
                    ws.recv(timeout=5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == code
    finally:
        server.stop()
