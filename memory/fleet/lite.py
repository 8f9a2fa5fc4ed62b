"""A Milvus Lite server as its own process, for a fleet on one machine and for tests.

Milvus Lite 3.x is a pure-Python engine (``milvus_lite``); pymilvus runs it inside the
calling process for a ``.db`` path, which one process can do (the data directory is
locked). Several robot processes share one by running ``python -m milvus_lite server``
(a gRPC server speaking the Milvus protocol) and connecting to ``milvus://127.0.0.1:PORT``
- the same code path as a Milvus standalone or cluster.

``max_workers=1``: Milvus Lite's engine is single-writer per collection (its server's
docstring says concurrent writes to one collection are not safe), so the server handles
one call at a time; a Milvus server has no such limit. ``memtable_mb``: Milvus Lite
searches rows not yet flushed to a segment one by one in Python (seconds at 10^4
rows), so the server flushes them once this much is buffered (its default is 128 MB).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["LiteServer"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiteServer:
    """``python -m milvus_lite server`` on ``data_dir``; ``uri`` is its ``milvus://``
    address. ``start()`` waits until it listens; ``kill()`` is SIGKILL (a crash)."""

    def __init__(
        self, data_dir: str | Path, *, port: int = 0, max_workers: int = 1, memtable_mb: int = 8
    ) -> None:
        self.data_dir = Path(data_dir)
        self.memtable_mb = memtable_mb
        self.port = port or _free_port()
        self.max_workers = max_workers
        self.proc: subprocess.Popen | None = None
        # stderr to a file, not a pipe: nobody reads a pipe while the server runs
        self._log = tempfile.TemporaryFile()

    @property
    def uri(self) -> str:
        return f"milvus://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> LiteServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "milvus_lite", "server",
                "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
                "--port", str(self.port), "--max-workers", str(self.max_workers),
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env={
                **os.environ,
                "MILVUS_LITE_MEMTABLE_MEMORY_LIMIT_BYTES": str(self.memtable_mb << 20),
            },
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.seek(0)
                err = self._log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"Milvus Lite server exited ({self.proc.returncode}): {err}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"Milvus Lite server on port {self.port} did not start in {timeout_s}s")

    def kill(self) -> None:
        """SIGKILL the server (what a crash or a power cut of the server looks like)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> LiteServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
