"""Chaos: a multi-process graph streams while a script kills, freezes and floods it.

Processes (real ZeroMQ bus through a broker, real ``MemorySystem`` with its journal):

- ``producer``: publishes ``Instruction(text="<incarnation>:<n>")`` on an ``all`` topic;
- ``writer``: subscribes to it (``all``), submits every message to a ``MemorySystem``
  (root on disk, journal + checkpoints) and appends the ids whose journal batch is
  *committed* (``journal_committed``) to ``committed.log``: the promise under test;
- both run under ``engram.runtime.supervisor`` (``always`` restart, short backoff).

The chaos script, every 0.3-0.8 s, picks one: SIGKILL a random process (the supervisor
restarts it), SIGSTOP one for 0.2-1 s then SIGCONT, inject 50 garbage frames into the
topic (a hostile publisher announced through the real broker), or stall a subscriber
(a subscription that never reads, held 1 s). Throughout it samples each process's RSS.

At the end everything is stopped (SIGTERM) and the store is reopened: every id in
``committed.log`` must be in the memory (checkpoints + journal replay). Printed (BENCH.md
shape): kills survived, messages committed vs lost, recovery time p50/p95 (kill of the
writer -> its first new commit; kill of the producer -> the writer's first message from the
new one), peak RSS. ``--quick``: 8 s; default 60 s.

``run_chaos()`` is what ``tests/runtime/test_chaos.py`` calls for its short version.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

TOPIC = "/chaos/data"
HERE = Path(__file__).resolve()
REPO = HERE.parents[1]


# ---------------------------------------------------------------------------
# the memory under test: remembers every id it was given


def _id_memory() -> Any:
    from engram.memory.base import Memory

    class IdMemory(Memory):
        name = "ids"
        accepts = ("Instruction",)

        def __init__(self) -> None:
            self.ids: set[str] = set()

        def write(self, msg: Any, *, topic: str = "") -> None:
            self.ids.add(msg.text)

        def recall(self, query: Any) -> list:
            return []

        def save(self, directory: str | Path) -> None:
            Path(directory, "ids.json").write_text(json.dumps(sorted(self.ids)))

        def load(self, directory: str | Path) -> None:
            self.ids = set(json.loads(Path(directory, "ids.json").read_text()))

        def reset(self) -> None:
            self.ids = set()

        def __len__(self) -> int:
            return len(self.ids)

    return IdMemory()


def _open_system(root: Path) -> Any:
    from engram.memory.system import MemorySystem, MemorySystemConfig

    cfg = MemorySystemConfig(
        root=str(root), journal_batch=16, journal_interval_s=0.1, checkpoint_every=300
    )
    return MemorySystem([_id_memory()], config=cfg)


# ---------------------------------------------------------------------------
# the two roles (child processes)


def _stop_flag() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def producer(url: str, rate_hz: float) -> int:
    from engram.runtime.bus import make_bus
    from engram.runtime.messages import Instruction

    stop = _stop_flag()
    bus = make_bus(url, all_block_timeout_s=0.5)
    incarnation = f"{os.getpid()}"
    n = 0
    period = 1.0 / rate_hz
    try:
        while not stop.is_set():
            n += 1
            bus.publish(TOPIC, Instruction(text=f"{incarnation}:{n}"))
            stop.wait(period)
    finally:
        bus.close()
    return 0


def writer(url: str, workdir: Path) -> int:
    from engram.runtime.bus import make_bus

    stop = _stop_flag()
    system = _open_system(workdir / "memory")
    log = open(workdir / "committed.log", "a", buffering=1)  # noqa: SIM115 - line buffered
    log.write(f"up {time.time():.6f} {os.getpid()}\n")
    bus = make_bus(url)
    sub = bus.subscribe(TOPIC, "all(64)")
    pending: list[tuple[int, str]] = []
    try:
        while not stop.is_set():
            msg = sub.get(timeout_s=0.05)
            if msg is not None:
                if system.submit(msg, timeout_s=5.0):
                    pending.append((system._jseq, msg.text))
            committed = system.journal_committed
            done = [text for jseq, text in pending if jseq <= committed]
            if done:
                pending = [(j, t) for j, t in pending if j > committed]
                log.write("".join(f"c {time.time():.6f} {t}\n" for t in done))
    finally:
        bus.close()
        system.close()  # flush + checkpoint: everything submitted is kept
        log.close()
    return 0


# ---------------------------------------------------------------------------
# the chaos script


def _rss_mb(pid: int | None) -> float:
    if not pid:
        return 0.0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _read_log(path: Path) -> tuple[list[tuple[float, str]], list[tuple[float, int]]]:
    commits, ups = [], []
    if not path.exists():
        return commits, ups
    for line in path.read_text().splitlines():
        parts = line.split(" ")
        if len(parts) == 3 and parts[0] == "c":
            commits.append((float(parts[1]), parts[2]))
        elif len(parts) == 3 and parts[0] == "up":
            ups.append((float(parts[1]), int(parts[2])))
    return commits, ups


def _garbage(url: str, n: int, rng: random.Random) -> None:
    """A hostile publisher: announced through the real broker, it sends junk frames."""
    import msgpack
    import zmq

    ctx = zmq.Context()
    raw = ctx.socket(zmq.XPUB)
    endpoint = url + f".junk{rng.randrange(1 << 30)}"
    hello = ctx.socket(zmq.DEALER)
    try:
        raw.bind(endpoint)
        hello.connect(url)
        hello.send_multipart([b"HELLO", msgpack.packb({"pubs": [endpoint, endpoint], "key": None})])
        if raw.poll(2000):  # a subscriber connected
            raw.recv()
            for _ in range(n):
                junk = [TOPIC.encode() + b"\0", rng.randbytes(rng.randrange(1, 200))]
                raw.send_multipart(junk, zmq.NOBLOCK)
    except zmq.ZMQError:
        pass
    finally:
        raw.close(linger=0)
        hello.close(linger=0)
        ctx.term()
        Path(endpoint[len("ipc://") :]).unlink(missing_ok=True)


def run_chaos(
    duration_s: float = 60.0, *, seed: int = 0, rate_hz: float = 100.0, verbose: bool = False
) -> dict[str, Any]:
    """Run the chaos scenario; -> figures (see the module docstring)."""
    from engram.runtime.bus import make_bus
    from engram.runtime.supervisor import ManagedProcess, RestartPolicy, Supervisor
    from engram.runtime.zmq_broker import serve_broker

    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="egchaos", dir="/tmp"))
    url = f"ipc://{workdir}/bus"
    broker = serve_broker(url)
    policy = RestartPolicy("always", max_restarts=-1, backoff_s=0.1, max_backoff_s=0.5)
    argv = [sys.executable, str(HERE), "--role"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        ManagedProcess("writer", [*argv, "writer", url, str(workdir)], restart=policy, env=env),
        ManagedProcess("producer", [*argv, "producer", url, str(rate_hz)], restart=policy, env=env),
    ]
    status = (lambda line: print(line, file=sys.stderr)) if verbose else None
    sup = Supervisor(procs, status=status, poll_s=0.02)
    actions: dict[str, int] = {"sigkill": 0, "sigstop": 0, "garbage": 0, "stall": 0}
    kills: list[tuple[str, float]] = []  # (process, wall time of the kill)
    rss_peak = {p.name: 0.0 for p in procs}
    rss_first: dict[str, float] = {}
    observer = make_bus(url)
    forced = rng.sample(procs, len(procs))
    sup.start()
    t_end = time.monotonic() + duration_s
    try:
        time.sleep(min(2.0, duration_s / 4))  # let both start (imports)
        while time.monotonic() < t_end:
            time.sleep(rng.uniform(0.3, 0.8))
            for p in procs:
                rss = _rss_mb(p.pid)
                rss_peak[p.name] = max(rss_peak[p.name], rss)
                rss_first.setdefault(p.name, rss)
            if forced and forced[-1].state == "running":  # first, one SIGKILL of each
                victim, action = forced.pop(), "sigkill"  # process: every run covers both
            else:
                victim = rng.choice(procs)
                action = rng.choice(["sigkill", "sigkill", "sigstop", "garbage", "stall"])
            if victim.pid is None or victim.state != "running":
                continue
            actions[action] += 1
            if action == "sigkill":
                kills.append((victim.name, time.time()))
                os.kill(victim.pid, signal.SIGKILL)
            elif action == "sigstop":
                pid = victim.pid
                os.kill(pid, signal.SIGSTOP)
                time.sleep(rng.uniform(0.2, 1.0))
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            elif action == "garbage":
                _garbage(url, 50, rng)
            else:
                stalled = observer.subscribe(TOPIC, "all(1)")  # never read
                time.sleep(1.0)
                stalled.close()
        # settle: every kill must be followed by recovery (bounded wait)
        settle_end = time.monotonic() + 20.0
        while time.monotonic() < settle_end:
            commits, ups = _read_log(workdir / "committed.log")
            if all(r is not None for r in _recovery_times(kills, commits, ups)):
                break
            time.sleep(0.2)
    finally:
        sup.stop(grace_s=5.0)
        observer.close()
        broker.close()
    commits, ups = _read_log(workdir / "committed.log")
    committed = {text for _, text in commits}
    system = _open_system(workdir / "memory")
    try:
        present = set(system["ids"].ids)
        load_errors = dict(system.stats()["load_errors"])
    finally:
        system.close(checkpoint=False)
    lost = sorted(committed - present)
    recovery = _recovery_times(kills, commits, ups)
    recovered = all(r is not None for r in recovery)
    shutil.rmtree(workdir, ignore_errors=True)
    out = {
        "duration_s": duration_s,
        "actions": actions,
        "kills": len(kills),
        "kills_recovered": sum(r is not None for r in recovery),
        "all_recovered": recovered,
        "committed": len(committed),
        "stored": len(present),
        "lost_committed": len(lost),
        "lost_examples": lost[:5],
        "recovery_s": sorted(r for r in recovery if r is not None),
        "restarts": {p.name: p.restarts for p in procs},
        "rss_mb_first": rss_first,
        "rss_mb_peak": rss_peak,
        "load_errors": load_errors,
    }
    return out


def _recovery_times(
    kills: list[tuple[str, float]], commits: list[tuple[float, str]], ups: list[tuple[float, int]]
) -> list[float | None]:
    """Per kill: seconds until the pipeline commits again (writer killed: its first commit
    after a restart; producer killed: the first commit of a message from a new producer)."""
    out: list[float | None] = []
    for name, t_kill in kills:
        found = None
        if name == "writer":
            restarted = [t for t, _ in ups if t > t_kill]
            if restarted:
                after = [t for t, _ in commits if t > restarted[0]]
                found = (after[0] - t_kill) if after else None
        else:
            old = {text.split(":")[0] for t, text in commits if t <= t_kill}
            after = [t for t, text in commits if t > t_kill and text.split(":")[0] not in old]
            found = (after[0] - t_kill) if after else None
        out.append(found)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 s instead of 60 s")
    parser.add_argument("--duration-s", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate-hz", type=float, default=100.0)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--role", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role:
        role, *rest = args.role
        if role == "producer":
            return producer(rest[0], float(rest[1]))
        return writer(rest[0], Path(rest[1]))
    sys.path.insert(0, str(REPO))
    from bench._common import emit, percentile, result

    duration = args.duration_s or (8.0 if args.quick else 60.0)
    r = run_chaos(duration, seed=args.seed, rate_hz=args.rate_hz, verbose=args.verbose)
    rec = r["recovery_s"]
    rows = [
        result("chaos", "kills_survived", r["kills_recovered"], "higher", kills=r["kills"]),
        result(
            "chaos",
            "committed_messages_lost",
            r["lost_committed"],
            "lower",
            committed=r["committed"],
        ),
        result("chaos", "recovery_p50_s", percentile(rec, 50) if rec else float("nan"), "lower"),
        result("chaos", "recovery_p95_s", percentile(rec, 95) if rec else float("nan"), "lower"),
        result("chaos", "peak_rss_mb", max(r["rss_mb_peak"].values()), "lower"),
    ]
    emit("chaos", rows, details=r)
    return 0 if r["lost_committed"] == 0 and r["all_recovered"] else 1


if __name__ == "__main__":
    sys.exit(main())
