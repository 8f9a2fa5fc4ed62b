"""The live web page: a node that watches the bus, and the FastAPI app that serves it.

Public surface (FastAPI, uvicorn and cv2 are imported only when an app is made or
an image encoded):

- ``LiveHub``, ``LiveHubConfig`` (``engram.runtime.apps.web.hub``): subscribes to frames,
  percepts, transcripts, sound events and heartbeats; asks the memory over the bus.
- ``make_app(hub)``, ``WebServer`` (``engram.runtime.apps.web.app``): the routes (``/``, ``/ws``,
  ``/api/*``) and uvicorn in a thread.
- ``STATIC_DIR``: the page's own files (HTML, JS, CSS; no external assets).
"""

from __future__ import annotations

from engram.runtime.apps.web.app import STATIC_DIR, WebServer, make_app
from engram.runtime.apps.web.hub import LiveHub, LiveHubConfig

__all__ = ["STATIC_DIR", "LiveHub", "LiveHubConfig", "WebServer", "make_app"]
