"""Persistence of the memory system: the journal, checkpoints, and recovery from damage.

Persistence (``root`` set). Crash safety is a journal plus checkpoints:

- every accepted message is appended to a journal (``root/journal``, a
  ``engram.memory.store.Store``) under a sequence number (jseq) before it is
  dispatched; journal batches commit every ``journal_batch`` messages or
  ``journal_interval_s`` seconds (also when idle);
- ``checkpoint()`` (automatic every ``checkpoint_every`` messages, and on
  ``close``) has each memory ``save`` into ``root/memories/<name>/ckpt-<jseq>``
  inside its lane (so exactly the messages up to jseq are in it), then
  atomically points ``root/memories/<name>/CURRENT`` at it (``os.replace``) and
  deletes the checkpoints before the previous one; the journal is pruned up to
  the oldest previous checkpoint (see Damage);
- on open, each memory loads its CURRENT checkpoint and the journal entries
  after its jseq are replayed into it.

Damage (a disk error, a file cut short). Each memory keeps its previous
checkpoint beside the current one, and the journal is pruned only up to the
oldest of those previous ones (so it holds up to two checkpoint intervals). A
checkpoint that fails to load is renamed ``ckpt-<jseq>.corrupt-<time>`` (kept,
never deleted) and its memory is restored from the previous checkpoint plus the
journal, or, with none, rebuilt from the journal, which then still reaches
back to the start: nothing is lost. The other memories load as usual. A
damaged journal is set aside the same way and a new one started (what it held
after the checkpoints is lost). Each case is logged and listed in
``stats()["load_errors"]`` (and by ``engram memory info``), and the system runs on.

Every loss is detected, not only damage that makes a file unreadable:

- ``root/journal.head`` holds the last committed jseq (rewritten, atomically, after each
  journal commit: one small file per batch). A journal truncated to 0 bytes or deleted
  opens as an empty store; on open, a head beyond the last jseq found (in the journal or
  the checkpoints) is reported with the number of messages lost, and numbering resumes
  after the head;
- each array a record holds carries a CRC-32 (``engram.memory.store``): a journal message
  whose arrays fail it is skipped and reported, the rest of the journal is replayed;
- ``CURRENT`` that is not a readable file naming a checkpoint (a directory, say) is set
  aside like a damaged checkpoint.

Reopening replays the journal in batches of ``_REPLAY_BATCH`` records (one SQLite query and
one array read per batch).

Loss bound: a process killed with SIGKILL loses at most the messages whose
journal batch was not committed: fewer than ``journal_batch`` messages, none
accepted more than ``journal_interval_s`` (plus one idle tick, 0.1 s) before the
kill. Not journaled: recall-time side effects (episodic reinforcement) since
the last checkpoint.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engram.memory.lanes import Lane
from engram.memory.store import Store, StoreConfig, StoreCorrupt, StoreError, record_to_message
from engram.runtime.messages import Message

__all__ = ["JOURNAL", "Persistence"]

log = logging.getLogger(__name__)

JOURNAL = "journal"  # the journal's collection in its ``Store``
HEAD = "journal.head"  # last committed jseq, beside the journal (Damage)


class Persistence:
    """The journal and checkpoint half of ``MemorySystem`` (which composes it).

    Uses the system's lanes, counters and locks: ``config`` (a ``MemorySystemConfig``),
    ``_lanes``, ``_journal``, ``_jseq``, ``_journal_committed``, ``_dispatched_jseq``,
    ``_since_checkpoint``, ``counters``, ``load_errors``, ``_submit_lock``,
    ``_dispatch_lock``, ``flush()`` and ``_apply_task()``.
    """

    config: Any
    _lanes: list[Lane]
    _journal: Store | None
    _jseq: int
    _journal_committed: int
    _head_written: int = 0  # the jseq last written to journal.head
    _dispatched_jseq: int
    _since_checkpoint: int
    counters: dict[str, int]
    load_errors: dict[str, str]
    _submit_lock: threading.Lock
    _dispatch_lock: threading.Lock

    if TYPE_CHECKING:  # defined by MemorySystem

        def flush(self, timeout_s: float | None = None) -> bool: ...

        def _apply_task(
            self, lane: Lane, jseq: int, msg: Message, topic: str
        ) -> Callable[[], str]: ...

    def _open_persistence(self, root: Path) -> None:
        cfg = self.config
        (root / "memories").mkdir(parents=True, exist_ok=True)
        journal_cfg = StoreConfig(
            batch_records=cfg.journal_batch,
            batch_interval_s=cfg.journal_interval_s,
            durable=cfg.durable,
        )
        try:
            self._journal = Store(root / "journal", config=journal_cfg)
        except StoreCorrupt as exc:
            moved = _set_aside(root / "journal")
            self._load_error("journal", f"{exc}; set aside as {moved}, a new journal started")
            self._journal = Store(root / "journal", config=journal_cfg)
        head = self._read_head(root)
        for lane in self._lanes:
            self._load_lane(lane)
        floor = min((lane.applied_jseq for lane in self._lanes), default=0)
        last = max((lane.applied_jseq for lane in self._lanes), default=0)
        replayed = 0
        damaged: list[str] = []
        try:
            for rec, problem in self._journal.scan_checked(JOURNAL):
                jseq = int(rec.record_id)
                last = max(last, jseq)
                if jseq <= floor:
                    continue
                if problem:
                    damaged.append(f"jseq {jseq}: {problem}")
                    continue
                try:
                    msg, topic = record_to_message(rec, trusted=True)  # validated on submit
                except (ValueError, KeyError, TypeError) as exc:
                    damaged.append(f"jseq {jseq}: {exc}")
                    continue
                # each memory's lane applies it (lanes run in parallel, in order each)
                for lane in self._lanes:
                    if jseq > lane.applied_jseq and (
                        msg.TYPE in lane.memory.accepts or not lane.memory.accepts
                    ):
                        lane.submit(self._apply_task(lane, jseq, msg, topic))
                replayed += 1
        except (sqlite3.DatabaseError, StoreError, ValueError, KeyError) as exc:
            # damage found part-way: keep what was replayed, set the journal aside
            self._journal.close()
            moved = _set_aside(root / "journal")
            self._load_error(
                "journal",
                f"replay stopped after {replayed} message(s): {exc!r}; set aside as {moved}, "
                "a new journal started",
            )
            self._journal = Store(root / "journal", config=journal_cfg)
        for lane in self._lanes:
            lane.idle()
        if damaged:
            self._load_error(
                "journal damage",
                f"{len(damaged)} journaled message(s) failed their checks and were skipped "
                f"(lost): {'; '.join(damaged[:5])}{' ...' if len(damaged) > 5 else ''}",
            )
        if head > last:
            self._load_error(
                "journal loss",
                f"messages {last + 1}..{head} ({head - last}) were committed to the journal "
                f"but are missing from it (journal truncated or deleted); the memories hold "
                f"what their checkpoints and the remaining journal had",
            )
        self.counters["replayed"] = replayed
        self.counters["lost_on_load"] = max(0, head - last) + len(damaged)
        last = max(last, head)
        self._jseq = self._journal_committed = self._dispatched_jseq = last
        self._head_written = last

    def _read_head(self, root: Path) -> int:
        path = root / HEAD
        try:
            return int(path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            self._load_error("journal.head", f"{path} is unreadable ({exc}); ignored")
            return 0

    def _committed(self, jseq: int) -> None:
        """Every journal message up to ``jseq`` is committed: note it (journal.head)."""
        self._journal_committed = jseq
        root = self.config.root
        if not root or jseq <= self._head_written:
            return
        tmp = Path(root) / (HEAD + ".tmp")
        try:
            tmp.write_text(f"{jseq}\n")
            os.replace(tmp, Path(root) / HEAD)
            self._head_written = jseq
        except OSError as exc:  # a full disk must not stop ingest; the journal has it
            log.warning("memory system at %s: cannot write %s: %s", root, HEAD, exc)

    def _load_lane(self, lane: Lane) -> None:
        """Load a memory's CURRENT checkpoint; when it is damaged, set it aside and fall
        back to the previous one (the journal reaches back to it), or to an empty memory."""
        mem_dir = self._mem_dir(lane.name)
        pointer = mem_dir / "CURRENT"
        ckpt = None
        try:
            ckpt = self._current_checkpoint(lane.name)
            if ckpt is not None:
                lane.memory.load(ckpt)
                lane.applied_jseq = _jseq_of(ckpt)
                older = [c for c in _checkpoints(mem_dir) if _jseq_of(c) < lane.applied_jseq]
                lane.fallback_jseq = _jseq_of(older[-1]) if older else 0
            return
        except Exception as exc:  # noqa: BLE001 - one bad checkpoint must not stop the rest
            problem = f"checkpoint {ckpt or pointer} could not be loaded ({exc})"
            if ckpt is not None:
                problem += f"; set aside as {_set_aside(ckpt)}"
        # only checkpoints older than the damaged one: a newer directory is the leftover
        # of an interrupted save (CURRENT never pointed at it)
        named = _read_pointer(pointer)
        below = _jseq_of(Path(named)) if re.fullmatch(r"ckpt-\d{16}", named) else 0
        if pointer.is_dir() or (pointer.exists() and not pointer.is_file()):
            problem += f"; {pointer.name} set aside as {_set_aside(pointer)}"
        else:
            pointer.unlink(missing_ok=True)
        if not below:  # no readable pointer: the newest directory may be an interrupted
            # save, so only the older ones (the journal reaches back to the previous one)
            below = max((_jseq_of(c) for c in _checkpoints(mem_dir)), default=0)
        older = [c for c in _checkpoints(mem_dir) if _jseq_of(c) < below]
        for prev in reversed(older):
            try:
                lane.memory.reset()
                _unshare(prev)  # its array files may be hard links of the damaged one's
                lane.memory.load(prev)
            except Exception as exc:  # noqa: BLE001 - try the next older one
                problem += f"; the older {prev.name} failed too ({exc}), set aside as "
                problem += str(_set_aside(prev))
                continue
            (mem_dir / "CURRENT.tmp").write_text(prev.name)
            os.replace(mem_dir / "CURRENT.tmp", pointer)
            lane.applied_jseq, lane.fallback_jseq = _jseq_of(prev), 0
            self._load_error(lane.name, f"{problem}; restored {prev.name} + the journal")
            return
        lane.memory.reset()
        lane.applied_jseq = lane.fallback_jseq = 0
        self._load_error(lane.name, f"{problem}; rebuilt from the journal")

    def _load_error(self, what: str, text: str) -> None:
        self.load_errors[what] = text
        log.error("memory system at %s: %s: %s", self.config.root, what, text)

    def _mem_dir(self, name: str) -> Path:
        return Path(self.config.root) / "memories" / name

    def _current_checkpoint(self, name: str) -> Path | None:
        pointer = self._mem_dir(name) / "CURRENT"
        if not pointer.exists():
            return None
        if not pointer.is_file():
            raise RuntimeError(f"{pointer} is not a file")
        named = pointer.read_text().strip()
        if not re.fullmatch(r"ckpt-\d{16}", named):
            raise RuntimeError(f"{pointer} does not name a checkpoint ({named[:40]!r})")
        target = self._mem_dir(name) / named
        if not target.is_dir():
            raise RuntimeError(f"{pointer} points at a missing checkpoint {target}")
        return target

    def checkpoint(self, *, _from_dispatcher: bool = False) -> dict[str, int]:
        """Save every memory at a consistent journal position; prune the journal.
        Returns {memory: jseq saved}."""
        if not self.config.root:
            raise RuntimeError("MemorySystem.checkpoint: no root directory configured")
        if not _from_dispatcher:
            self.flush()
        with self._submit_lock:
            self._journal.commit()  # type: ignore[union-attr]
            self._committed(self._jseq)
        with self._dispatch_lock:
            # Every message up to this jseq is queued before the save in each lane, so
            # each save holds exactly the messages <= jseq (those its memory accepts).
            jseq = self._dispatched_jseq
            futs = [(lane, lane.submit(self._save_task(lane, jseq))) for lane in self._lanes]
        saved = {lane.name: fut.result() for lane, fut in futs}
        # Keep the journal back to the *previous* checkpoints: a damaged current one is
        # then replaced by its predecessor plus the journal, and nothing is lost.
        floor = min((lane.fallback_jseq for lane in self._lanes), default=0)
        if floor:
            self._journal.delete_where(JOURNAL, max_record_id=f"{floor:016d}")  # type: ignore[union-attr]
            if self._journal.count(JOURNAL) == 0:  # type: ignore[union-attr]
                self._journal.compact()  # type: ignore[union-attr]
        self._since_checkpoint = 0
        return saved

    def _save_task(self, lane: Lane, jseq: int) -> Callable[[], int]:
        def task() -> int:
            t0 = time.perf_counter()
            lane.applied_jseq = max(lane.applied_jseq, jseq)
            mem_dir = self._mem_dir(lane.name)
            current = self._current_checkpoint(lane.name)
            name = f"ckpt-{jseq:016d}"
            if current is not None and current.name == name:
                return jseq  # nothing new since the last checkpoint
            target = mem_dir / name
            if target.exists():
                shutil.rmtree(target)  # a leftover of an interrupted checkpoint
            target.mkdir(parents=True)
            if current is not None and getattr(lane.memory, "incremental_save", False):
                _clone_store(current, target)  # then save() writes only the changes
            lane.memory.save(target)
            _fsync_dir(target) if self.config.durable else None
            tmp = mem_dir / "CURRENT.tmp"
            tmp.write_text(name)
            os.replace(tmp, mem_dir / "CURRENT")  # atomic switch
            keep = {name, current.name if current is not None else name}
            for old in _checkpoints(mem_dir):
                if old.name not in keep:
                    shutil.rmtree(old, ignore_errors=True)
            lane.fallback_jseq = _jseq_of(current) if current is not None else 0
            lane.latency["save"].add(time.perf_counter() - t0)
            return jseq

        return task

    @property
    def journal_committed(self) -> int:
        """The last journal sequence number known to be committed (survives a kill)."""
        return self._journal_committed

    def disk_bytes(self) -> int:
        if not self.config.root:
            return 0
        return sum(p.stat().st_size for p in Path(self.config.root).rglob("*") if p.is_file())


def _clone_store(src: Path, dst: Path) -> None:
    """Start checkpoint ``dst`` as a copy of checkpoint ``src`` (a ``engram.memory.store.Store``):
    the SQLite database is copied (backup API), the append-only array files are
    hard-linked, so a copy costs O(metadata), and the following save appends only what
    changed. Safe: ``src`` reads its arrays only up to its own committed lengths, and if
    the checkpoint never completes, reopening ``src`` truncates what ``dst`` appended."""
    if not (src / "store.sqlite").exists():
        return
    import sqlite3

    for f in (src / "arrays").rglob("*.bin"):
        link = dst / f.relative_to(src)
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f, link)
        except OSError:  # no hard links on this filesystem: copy
            shutil.copy2(f, link)
    with sqlite3.connect(src / "store.sqlite") as a, sqlite3.connect(dst / "store.sqlite") as b:
        a.backup(b)
    b.close()
    a.close()


def _read_pointer(pointer: Path) -> str:
    """What a CURRENT file names ("" when it is missing, not a file or unreadable)."""
    try:
        return pointer.read_text().strip() if pointer.is_file() else ""
    except (OSError, UnicodeDecodeError):
        return ""


def _checkpoints(mem_dir: Path) -> list[Path]:
    """A memory's checkpoint directories (not set-aside ones), oldest first."""
    found = [p for p in mem_dir.glob("ckpt-*") if re.fullmatch(r"ckpt-\d{16}", p.name)]
    return sorted((p for p in found if p.is_dir()), key=_jseq_of)


def _jseq_of(ckpt: Path) -> int:
    return int(ckpt.name.split("-")[1])


def _unshare(ckpt: Path) -> None:
    """Give a checkpoint its own copy of hard-linked array files (``_clone_store`` links
    them into the next checkpoint, which appends to them) before it is opened for writing."""
    for f in (ckpt / "arrays").rglob("*.bin"):
        if f.stat().st_nlink > 1:
            tmp = f.with_name(f.name + ".unshare")
            shutil.copy2(f, tmp)
            os.replace(tmp, f)


def _set_aside(path: Path) -> Path:
    """Rename a damaged store directory to ``<name>.corrupt-<unix time>`` (kept for
    inspection, never deleted) and return the new path."""
    target = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{int(time.time())}-{n}")
        n += 1
    os.replace(path, target)
    return target


def _fsync_dir(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
