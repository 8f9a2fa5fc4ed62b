"""``engram memory``: look into a memory store on disk, ask it, move it elsewhere.

A store is the ``root`` directory of a ``MemorySystem`` (``runs/demo/memory`` after
``engram demo``, a memory node's ``root``): ``memories/<name>/ckpt-<jseq>`` checkpoints
and a ``journal``. The store must not be open in a running process (its writer lock);
ask a running memory node over the bus (``/memory/query``) instead.

    engram memory info ROOT                      records, checkpoints, bytes, problems
    engram memory ask ROOT "where is the mug?"   an answer with its evidence, or "I have not
                                                 seen that" (--json: the answer object;
                                                 --hits: the ranked recalls instead)
    engram memory export ROOT OUT                a portable copy: JSONL + .npz per memory
    engram memory import OUT ROOT                a new store from such a copy

``info`` and ``ask`` open the store the way a memory node does (current checkpoints
plus the journal) and change nothing in it, except setting damaged files aside (see
``memory/system.py``). ``export`` writes ``OUT/manifest.json``, for each memory its
current checkpoint as ``OUT/<name>.jsonl`` + ``.jsonl.npz`` (``Store.export``; the
spatial memory's own ``.json`` + ``.npz`` files are copied into ``OUT/<name>/``), and
the journal as ``OUT/journal.jsonl``: readable without Engram. ``import`` rebuilds
the same store, which then answers the same recalls.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "export_store", "import_store", "run"]

EXPORT_FORMAT = "engram-memory-export/1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n", 1)[1] if __doc__ else None
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    info = sub.add_parser("info", help="records, checkpoints and bytes of each memory")
    info.add_argument("root", help="the store: a MemorySystem root directory")
    ask = sub.add_parser("ask", help="answer a question from the store (with its evidence)")
    ask.add_argument("root", help="the store: a MemorySystem root directory")
    ask.add_argument("question", help='e.g. "where is the red cup?"')
    ask.add_argument("--json", action="store_true", help="print the answer object as JSON")
    ask.add_argument(
        "--hits",
        action="store_true",
        help="print the ranked recalls instead of an answer (as /memory/query's hits)",
    )
    ask.add_argument("--top-k", type=int, default=5, help="recalls to show with --hits (default 5)")
    ask.add_argument(
        "--memories", default="", help="comma-separated memory names to ask (default: all)"
    )
    ask.add_argument(
        "--text-encoder",
        default="minilm",
        help="sentence encoder for names the word lists do not know, loaded only when such a "
        "name is asked (default minilm; 'none' for words only)",
    )
    exp = sub.add_parser("export", help="write a portable copy (JSONL + .npz)")
    exp.add_argument("root", help="the store to export")
    exp.add_argument("out", help="directory to write (must not exist or be empty)")
    imp = sub.add_parser("import", help="make a new store from an export")
    imp.add_argument("export", help="a directory written by 'engram memory export'")
    imp.add_argument("root", help="the new store's directory (must not exist or be empty)")


def run(args: argparse.Namespace) -> int:
    from engram.memory.store import StoreError, StoreLocked

    try:
        if args.action == "info":
            return _info(args)
        if args.action == "ask":
            return _ask(args)
        if args.action == "export":
            n = export_store(args.root, args.out)
            print(f"engram memory: exported {n} record versions to {args.out}")
            return 0
        n = import_store(args.export, args.root)
        print(f"engram memory: imported {n} record versions into {args.root}")
        return 0
    except StoreLocked:
        print(
            f"engram memory: {args.root} is open in a running process (a memory node?): "
            "ask it over the bus (/memory/query) or stop it first",
            file=sys.stderr,
        )
        return 2
    except (StoreError, ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"engram memory: {exc}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------------
# info / ask
#
# Both open only what they need: the memories that answer questions (not the working
# memory, whose bank needs torch) and no text encoder up front; ``ask`` loads the
# encoder only when a name is not in the word lists (engram.memory.answer.names).
# Measured on the 45 MB store of `engram demo --task cups`: 0.4 s for info, under 1 s
# for ask (bench/memory_qa.py), where opening everything with MiniLM took 6-20 s.

#: the memories an answer can come from (the working memory holds policy tokens)
ANSWERING = ("spatial", "temporal", "episodic", "semantic")


def _check_root(root: str | Path) -> Path:
    path = Path(root).expanduser()
    if not (path / "memories").is_dir():
        raise FileNotFoundError(
            f"{path} is not a memory store (no memories/ directory); engram demo writes one "
            "to runs/demo/memory"
        )
    return path


def _present(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "memories").iterdir() if p.is_dir())


def _open(root: Path, names: list[str], embedders: Any = None) -> Any:
    from engram.memory.embedding import Embedders
    from engram.memory.system import MemorySystem, MemorySystemConfig, default_memories

    embedders = embedders if embedders is not None else Embedders()
    mems = default_memories(embedders, include=names)
    return MemorySystem(
        mems, embedders=embedders, config=MemorySystemConfig(root=str(root), checkpoint_every=0)
    )


def _stored_entries(ckpt: Path, name: str) -> str:
    """A memory not opened by ``info`` (the working memory): its entries, read from the
    checkpoint's store without building the memory."""
    from engram.memory.store import Store, StoreConfig

    if not (ckpt / "store.sqlite").exists():
        return "?"
    with Store(ckpt, config=StoreConfig(read_only=True)) as store:
        rec = store.get(name, "bank")
        if rec is not None and isinstance(rec.payload.get("entries"), list):
            return str(len(rec.payload["entries"]))
        return str(store.count(name))


def _info(args: argparse.Namespace) -> int:
    root = _check_root(args.root)
    present = _present(root)
    opened = [n for n in present if n != "working"]  # its bank needs torch: read, not built
    system = _open(root, opened)
    try:
        st = system.stats()
        print(f"memory store {root}")
        for name in present:
            mem_dir = root / "memories" / name
            cur = mem_dir / "CURRENT"
            ckpt = cur.read_text().strip() if cur.exists() else "(none)"
            size = sum(p.stat().st_size for p in mem_dir.rglob("*") if p.is_file())
            if name in system.names:
                n = str(len(system[name]))
            else:
                n = _stored_entries(mem_dir / ckpt, name) if cur.exists() else "0"
            print(f"  {name:<10} {n:>8} records   checkpoint {ckpt}   {size / 1e6:.2f} MB")
        print(f"  journal: {st['replayed']} message(s) after the checkpoints (replayed on open)")
        for what, why in st["load_errors"].items():
            print(f"  problem: {what}: {why}")
    finally:
        system.close(checkpoint=False)
    return 0


class _LazyEncoder:
    """``text -> (D,)`` that loads the registered encoder on its first call."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._fn: Any = None

    def __call__(self, text: str) -> Any:
        if self._fn is None:
            from engram.memory.embedding import load_text_embedder

            self._fn = load_text_embedder(self.name)
        return self._fn(text)


def _ask(args: argparse.Namespace) -> int:
    root = _check_root(args.root)
    if not args.question.strip():
        raise ValueError("the question is empty")
    present = _present(root)
    names = [n.strip() for n in args.memories.split(",") if n.strip()]
    unknown = sorted(set(names) - set(present))
    if unknown:
        raise ValueError(f"--memories: {unknown} not in this store (it has {present})")
    if args.text_encoder != "none":
        from engram.runtime import registry

        known = registry.known("encoder")
        if args.text_encoder not in known:
            raise ValueError(
                f"--text-encoder {args.text_encoder!r}: unknown; known: {', '.join(known)}, none"
            )
    if args.hits:
        return _ask_hits(args, root, names or present)
    from engram.memory.answer import Answerer, NameTable

    use = [n for n in (names or present) if n in ANSWERING]
    system = _open(root, use)
    try:
        embed = None if args.text_encoder == "none" else _LazyEncoder(args.text_encoder)
        answerer = Answerer(system.recall, memories=system.names, names=NameTable(embed=embed))
        answer = answerer.ask(args.question)
    finally:
        system.close(checkpoint=False)
    if args.json:
        print(json.dumps(answer.to_dict(), indent=2, default=str))
        return 0
    print(answer.answer)
    if answer.evidence:
        print("evidence:")
    for e in answer.evidence:
        where = "" if e.position is None else " at ({:.2f}, {:.2f}, {:.2f})".format(*e.position)
        if where and where.strip() in e.text:  # the record's text already says where
            where = ""
        print(f"  [{e.memory} {e.record_id}] t={e.stamp_ns / 1e9:.1f} s  {e.text}{where}")
    return 0


def _ask_hits(args: argparse.Namespace, root: Path, names: list[str]) -> int:
    from engram.memory.node import embed_query, make_embedders
    from engram.runtime.messages import MemoryQuery

    embedders = make_embedders("" if args.text_encoder == "none" else args.text_encoder)
    system = _open(root, names, embedders)
    try:
        query = MemoryQuery(text=args.question, top_k=args.top_k, memories=names)
        hits = system.recall(embed_query(query, system.embedders))
    finally:
        system.close(checkpoint=False)
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], indent=2, default=str))
        return 0
    if not hits:
        print("nothing recalled")
    for i, h in enumerate(hits, 1):
        where = "" if h.position is None else " at ({:.2f}, {:.2f}, {:.2f})".format(*h.position)
        text = h.text if not where or where.strip() in h.text else h.text + where
        print(f"{i:>2}. [{h.memory}] {h.score:.3f}  {text}  (t={h.stamp_ns / 1e9:.1f} s)")
    return 0


# ---------------------------------------------------------------------------
# export / import


def _empty_target(path: str | Path) -> Path:
    out = Path(path).expanduser()
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new directory")
    out.mkdir(parents=True, exist_ok=True)
    return out


def export_store(root: str | Path, out: str | Path) -> int:
    """Write a portable copy of the store at ``root`` into ``out`` (see the module
    docstring); returns the number of record versions written."""
    from engram.memory.store import Store, StoreConfig

    src = _check_root(root)
    dst = _empty_target(out)
    manifest: dict[str, Any] = {"format": EXPORT_FORMAT, "memories": {}, "journal": False}
    n = 0
    for mem_dir in sorted(p for p in (src / "memories").iterdir() if p.is_dir()):
        pointer = mem_dir / "CURRENT"
        if not pointer.exists():
            continue  # never checkpointed: all of it is in the journal
        ckpt = mem_dir / pointer.read_text().strip()
        if (ckpt / "store.sqlite").exists():
            with Store(ckpt, config=StoreConfig(read_only=True)) as store:
                n += store.export(dst / f"{mem_dir.name}.jsonl")
            kind = "store"
        else:  # a memory with its own portable files (spatial: .json + .npz)
            files = [p for p in ckpt.iterdir() if p.is_file() and p.name != "LOCK"]
            (dst / mem_dir.name).mkdir()
            for p in files:
                shutil.copy2(p, dst / mem_dir.name / p.name)
            n += len(files)
            kind = "files"
        manifest["memories"][mem_dir.name] = {"kind": kind, "checkpoint": ckpt.name}
    if (src / "journal" / "store.sqlite").exists():
        with Store(src / "journal", config=StoreConfig(read_only=True)) as journal:
            n += journal.export(dst / "journal.jsonl")
        manifest["journal"] = True
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return n


def import_store(export: str | Path, root: str | Path) -> int:
    """Rebuild a store at ``root`` (new or empty) from ``export``; returns the number of
    record versions read."""
    from engram.memory.store import Store

    src = Path(export).expanduser()
    try:
        manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{src}: not an Engram memory export ({exc})") from None
    if manifest.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{src}: unknown export format {manifest.get('format')!r}")
    dst = _empty_target(root)
    n = 0
    for name, entry in manifest["memories"].items():
        ckpt = dst / "memories" / name / entry["checkpoint"]
        ckpt.mkdir(parents=True)
        if entry["kind"] == "store":
            with Store(ckpt) as store:
                n += store.import_(src / f"{name}.jsonl")
        else:
            for p in (src / name).iterdir():
                shutil.copy2(p, ckpt / p.name)
                n += 1
        (ckpt.parent / "CURRENT").write_text(entry["checkpoint"])
    if manifest.get("journal"):
        with Store(dst / "journal") as journal:
            n += journal.import_(src / "journal.jsonl")
    (dst / "memories").mkdir(exist_ok=True)
    return n
