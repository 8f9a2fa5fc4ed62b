"""Process supervision for launch graphs: restart on crash with backoff, clean shutdown.

The launcher (``runtime/launcher.py``) runs each ``process:`` group of a graph as
one OS process and hands them to a ``Supervisor``:

- each child runs ``python -m engram.runtime.child --spec GROUP.json --group NAME
  --parent-pid PID`` (``engram.runtime.child``): it joins the bus, starts its nodes,
  and stops them cleanly on SIGTERM/SIGINT, or when its parent dies (it polls
  ``os.getppid()``, so no orphan outlives a SIGKILLed launcher);
- a monitor thread polls the children; when one exits while the launch is
  running, its ``RestartPolicy`` decides: ``always`` restarts on any exit,
  ``on-failure`` on a non-zero exit or a signal (SIGKILL included), ``never``
  leaves it down. Delays grow exponentially (``backoff_delay_s``) and reset once
  a process stayed up ``stable_s``; after ``max_restarts`` the group is marked
  ``failed`` and left down;
- ``Supervisor.stop(grace_s)`` sends SIGTERM to every child's process group,
  waits ``grace_s``, then SIGKILLs what is left and reaps everything.

Liveness. A process can be alive and useless: stopped (SIGSTOP), deadlocked, or with a
node whose heartbeat timer is stuck. Each child gets a pipe (its write end's number in
``ENGRAM_WATCHDOG_FD``); ``engram.runtime.child`` writes a line there every 0.5 s from a
thread of its own, never through the bus, so no data topic can block it: the age of
each node's last heartbeat (``ages camera=0.31 stats=0.40``). Once a process has written
one line, the supervisor expects them: silence for ``heartbeat_timeout_s``, or a node
whose heartbeat is older than that, is reported ("stopped heartbeating") and, unless
the policy is ``never``, the process is killed (SIGKILL) and restarted like any crash.
Commands that never write (not an Engram child) are not watched.

Children run in their own session (``start_new_session``), so a terminal's
Ctrl-C reaches only the launcher, which then shuts the children down in order.
A child exits 0 when told to stop or when all its nodes stopped by themselves,
1 when its nodes could not be built or started.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "RESTART_POLICIES",
    "ManagedProcess",
    "RestartPolicy",
    "Supervisor",
    "backoff_delay_s",
    "describe_exit",
]

log = logging.getLogger(__name__)

RESTART_POLICIES = ("always", "on-failure", "never")


@dataclass(frozen=True)
class RestartPolicy:
    """When and how fast a crashed process is restarted (``restart:`` in a launch graph)."""

    policy: str = "on-failure"  # always | on-failure | never
    max_restarts: int = 5  # restarts allowed before giving up; -1 = no limit
    backoff_s: float = 0.5  # delay before the first restart; doubles per consecutive crash
    max_backoff_s: float = 30.0  # cap on the delay
    stable_s: float = 10.0  # a process up at least this long resets the consecutive-crash count
    # a process (or one of its nodes) silent this long is reported and, unless policy is
    # never, killed and restarted (Liveness); 0 = not watched
    heartbeat_timeout_s: float = 10.0

    def problems(self) -> list[str]:
        """Invalid settings, as messages naming the field."""
        out = []
        if self.policy not in RESTART_POLICIES:
            out.append(f"policy must be one of {', '.join(RESTART_POLICIES)}, got {self.policy!r}")
        if not isinstance(self.max_restarts, int) or isinstance(self.max_restarts, bool):
            out.append(f"max_restarts must be an int, got {self.max_restarts!r}")
        elif self.max_restarts < -1:
            out.append(f"max_restarts must be >= -1 (-1 = no limit), got {self.max_restarts}")
        for name in ("backoff_s", "max_backoff_s", "stable_s", "heartbeat_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                out.append(f"{name} must be a number >= 0, got {value!r}")
        return out

    def wants_restart(self, returncode: int) -> bool:
        """Whether an exit with ``returncode`` (negative = killed by a signal) calls for a restart."""
        if self.policy == "always":
            return True
        if self.policy == "on-failure":
            return returncode != 0
        return False


def backoff_delay_s(policy: RestartPolicy, consecutive_crashes: int) -> float:
    """Delay before restart number ``consecutive_crashes`` (1-based) of a run of crashes."""
    exponent = max(consecutive_crashes - 1, 0)
    return float(min(policy.backoff_s * (2.0 ** min(exponent, 30)), policy.max_backoff_s))


def describe_exit(returncode: int) -> str:
    """``"exited with code 1"`` or ``"killed by SIGKILL"``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _parse_ages(line: bytes) -> dict[str, float]:
    """``b"ages camera=0.31 stats=0.40"`` -> ``{"camera": 0.31, "stats": 0.4}`` (junk -> {})."""
    out: dict[str, float] = {}
    words = line.decode("utf-8", "replace").split()
    if not words or words[0] != "ages":
        return out
    for word in words[1:]:
        name, _, age = word.rpartition("=")
        try:
            out[name] = float(age)
        except ValueError:
            continue
    return out


def _print_status(line: str) -> None:
    print(f"engram launch: {line}", file=sys.stderr, flush=True)


@dataclass
class ManagedProcess:
    """One supervised OS process: its command, restart policy and live state.

    state: ``idle`` (not started) | ``running`` | ``waiting`` (backing off before a
    restart) | ``exited`` (ended, no restart wanted) | ``failed`` (gave up after
    ``max_restarts``) | ``stopped`` (shut down by the supervisor).
    """

    name: str
    argv: list[str]
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    env: dict[str, str] | None = None  # full environment for the child; None = inherit
    cwd: str | None = None  # working directory; None = inherit
    nodes: tuple[str, ...] = ()  # node names it runs (for status lines)

    state: str = "idle"
    pid: int | None = None
    restarts: int = 0
    consecutive_crashes: int = 0
    last_exit: str = ""
    started_at: float = 0.0
    next_start_at: float = 0.0
    pids: list[int] = field(default_factory=list)  # every pid it has had, oldest first
    hangs: int = 0  # times it was found not heartbeating (Liveness)
    last_beat_at: float = 0.0  # monotonic time of its last watchdog line; 0 = none yet
    node_ages_s: dict[str, float] = field(default_factory=dict)  # from that line
    _popen: subprocess.Popen | None = field(default=None, repr=False)
    _watch_fd: int | None = field(default=None, repr=False)
    _watch_buf: bytes = field(default=b"", repr=False)
    _hung: str = field(default="", repr=False)  # why it was found hung (reported once)

    @property
    def finished(self) -> bool:
        return self.state in ("exited", "failed", "stopped")

    def info(self) -> dict[str, object]:
        return {
            "state": self.state,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "nodes": list(self.nodes),
            "hangs": self.hangs,
        }


class Supervisor:
    """Starts ``ManagedProcess``es, restarts them per policy, stops them cleanly."""

    def __init__(
        self,
        processes: Sequence[ManagedProcess],
        *,
        status: Callable[[str], None] | None = _print_status,
        poll_s: float = 0.05,
    ) -> None:
        names = [p.name for p in processes]
        if len(set(names)) != len(names):
            raise ValueError(f"process names must be unique, got {names}")
        self.processes = {p.name: p for p in processes}
        self._status = status or (lambda line: None)
        self._poll_s = poll_s
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._changed = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None

    # ---- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            for proc in self.processes.values():
                self._spawn(proc)
        self._thread = threading.Thread(target=self._monitor, name="supervisor", daemon=True)
        self._thread.start()

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM every child, SIGKILL those still alive after ``grace_s``, reap all."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            live = [p for p in self.processes.values() if p._popen and p._popen.poll() is None]
            for proc in live:
                self._status(f"stopping process {proc.name!r} (pid {proc.pid})")
                self._signal(proc, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            for proc in live:
                assert proc._popen is not None
                try:
                    proc._popen.wait(max(deadline - time.monotonic(), 0.0))
                except subprocess.TimeoutExpired:
                    self._status(
                        f"process {proc.name!r} (pid {proc.pid}) ignored SIGTERM for "
                        f"{grace_s:g} s; sending SIGKILL"
                    )
                    self._signal(proc, signal.SIGKILL)
                    proc._popen.wait()
            for proc in self.processes.values():
                if proc._popen is not None and proc._popen.returncode is not None:
                    if proc.state == "running":
                        proc.last_exit = describe_exit(proc._popen.returncode)
                if not proc.finished:
                    proc.state = "stopped"
                self._close_watch(proc)
            self._changed.notify_all()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until every process is finished (or ``timeout_s``); True if all finished."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._changed:
            while not all(p.finished for p in self.processes.values()):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(0.2 if left is None else min(left, 0.2))
            return True

    @property
    def failed(self) -> list[str]:
        return [p.name for p in self.processes.values() if p.state == "failed"]

    def status(self) -> dict[str, dict[str, object]]:
        with self._lock:
            return {name: proc.info() for name, proc in self.processes.items()}

    # ---- internals -----------------------------------------------------------------
    def _spawn(self, proc: ManagedProcess) -> None:
        self._close_watch(proc)
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        env = dict(proc.env if proc.env is not None else os.environ)
        env["ENGRAM_WATCHDOG_FD"] = str(write_fd)
        try:
            popen = subprocess.Popen(
                proc.argv,
                env=env,
                cwd=proc.cwd,
                start_new_session=True,
                pass_fds=(write_fd,),
            )
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            proc.state = "failed"
            proc.last_exit = f"could not start: {exc}"
            self._status(f"process {proc.name!r} could not start: {exc}")
            return
        os.close(write_fd)
        proc._watch_fd, proc._watch_buf, proc._hung = read_fd, b"", ""
        proc.last_beat_at, proc.node_ages_s = 0.0, {}
        proc._popen = popen
        proc.pid = popen.pid
        proc.pids.append(popen.pid)
        proc.state = "running"
        proc.started_at = time.monotonic()
        nodes = f" (nodes: {', '.join(proc.nodes)})" if proc.nodes else ""
        verb = "restarted" if proc.restarts else "started"
        self._status(f"{verb} process {proc.name!r} pid {popen.pid}{nodes}")

    def _signal(self, proc: ManagedProcess, sig: signal.Signals) -> None:
        if proc.pid is None:
            return
        try:
            os.killpg(proc.pid, sig)  # the child leads its own process group
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                pass

    def _monitor(self) -> None:
        while not self._stopping.wait(self._poll_s):
            with self._lock:
                if self._stopping.is_set():
                    return
                now = time.monotonic()
                for proc in self.processes.values():
                    if proc.state == "running" and proc._popen is not None:
                        code = proc._popen.poll()
                        if code is not None:
                            self._close_watch(proc)
                            self._on_exit(proc, code, now)
                            self._changed.notify_all()
                        else:
                            self._watch(proc, now)
                    elif proc.state == "waiting" and now >= proc.next_start_at:
                        self._spawn(proc)
                        self._changed.notify_all()

    def _watch(self, proc: ManagedProcess, now: float) -> None:
        """Read the process's watchdog lines; report (and kill, per policy) a hang."""
        timeout_s = proc.restart.heartbeat_timeout_s
        if proc._watch_fd is not None:
            try:
                while chunk := os.read(proc._watch_fd, 65536):
                    proc._watch_buf = (proc._watch_buf + chunk)[-65536:]
                    if len(chunk) < 65536:
                        break
            except BlockingIOError:
                pass
            except OSError:
                self._close_watch(proc)
            *lines, proc._watch_buf = proc._watch_buf.split(b"\n")
            if lines:
                proc.last_beat_at = now
                proc.node_ages_s = _parse_ages(lines[-1])
        if timeout_s <= 0 or proc.last_beat_at == 0.0 or proc._hung:
            return
        silent_s = now - proc.last_beat_at
        if silent_s > timeout_s:
            why = f"sent no heartbeat for {silent_s:.1f} s (stopped or hung)"
        else:
            stale = {n: a for n, a in proc.node_ages_s.items() if a > timeout_s}
            if not stale:
                return
            why = "node(s) stopped heartbeating: " + ", ".join(
                f"{n} ({a:.1f} s)" for n, a in sorted(stale.items())
            )
        proc._hung = why
        proc.hangs += 1
        if proc.restart.policy == "never":
            self._status(f"process {proc.name!r} (pid {proc.pid}) {why}; not restarting (never)")
            return
        self._status(f"process {proc.name!r} (pid {proc.pid}) {why}; killing it to restart")
        self._signal(proc, signal.SIGKILL)

    def _close_watch(self, proc: ManagedProcess) -> None:
        if proc._watch_fd is not None:
            try:
                os.close(proc._watch_fd)
            except OSError:
                pass
            proc._watch_fd = None

    def _on_exit(self, proc: ManagedProcess, code: int, now: float) -> None:
        proc.last_exit = describe_exit(code)
        if proc._hung:
            proc.last_exit += f" after it {proc._hung}"
        policy = proc.restart
        if not policy.wants_restart(code):
            proc.state = "exited"
            self._status(
                f"process {proc.name!r} {proc.last_exit}; not restarting ({policy.policy})"
            )
            return
        if policy.max_restarts >= 0 and proc.restarts >= policy.max_restarts:
            proc.state = "failed"
            self._status(
                f"process {proc.name!r} {proc.last_exit}; giving up after "
                f"{proc.restarts} restart(s) (max_restarts={policy.max_restarts})"
            )
            return
        if now - proc.started_at >= policy.stable_s:
            proc.consecutive_crashes = 0
        proc.consecutive_crashes += 1
        proc.restarts += 1
        delay = backoff_delay_s(policy, proc.consecutive_crashes)
        proc.state = "waiting"
        proc.next_start_at = now + delay
        limit = "" if policy.max_restarts < 0 else f"/{policy.max_restarts}"
        self._status(
            f"process {proc.name!r} {proc.last_exit}; restarting in {delay:.2g} s "
            f"(restart {proc.restarts}{limit})"
        )
