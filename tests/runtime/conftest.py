"""Bus fixtures shared by the runtime tests: a short ipc address and a broker serving it."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest

from engram.runtime.zmq_broker import serve_broker


@pytest.fixture
def ipc_url() -> Iterator[str]:
    # unix socket paths must stay short (~107 bytes): pytest's tmp_path can be too long
    directory = tempfile.mkdtemp(prefix="egz", dir="/tmp")
    yield f"ipc://{directory}/bus"
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def broker(ipc_url: str) -> Iterator[str]:
    """``ipc_url`` with a broker serving it (the broker stops after the test)."""
    handle = serve_broker(ipc_url)
    yield ipc_url
    handle.close()
