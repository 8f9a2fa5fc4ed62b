"""``engram memory``: look into a memory store on disk, ask it, move it elsewhere.

A store is the ``root`` directory of a ``MemorySystem`` (``runs/demo/memory`` after
``engram demo``, a memory node's ``root``): ``memories/<name>/ckpt-<jseq>`` checkpoints
and a ``journal``. The store must not be open in a running process (its writer lock);
ask a running memory node over the bus (``/memory/query``) instead.

    engram memory info ROOT                      records, checkpoints, bytes, problems
    engram memory ask ROOT "where is the mug?"   recalls, best first (--json for scripts)
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
    ask = sub.add_parser("ask", help="recall from the store (as /memory/query would)")
    ask.add_argument("root", help="the store: a MemorySystem root directory")
    ask.add_argument("question", help='e.g. "where is the red cup?"')
    ask.add_argument("--top-k", type=int, default=5, help="hits to show (default 5)")
    ask.add_argument(
        "--memories", default="", help="comma-separated memory names to ask (default: all)"
    )
    ask.add_argument("--json", action="store_true", help="print the hits as JSON")
    for p in (info, ask):
        p.add_argument(
            "--text-encoder",
            default="minilm",
            help="sentence encoder for the question and facts, as the memory node used "
            "(default minilm; 'none' for words only)",
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


def _check_root(root: str | Path) -> Path:
    path = Path(root).expanduser()
    if not (path / "memories").is_dir():
        raise FileNotFoundError(
            f"{path} is not a memory store (no memories/ directory); engram demo writes one "
            "to runs/demo/memory"
        )
    return path


def _open(root: Path, text_encoder: str, names: list[str] | None = None) -> Any:
    from engram.memory.node import make_embedders
    from engram.memory.system import MemorySystem, MemorySystemConfig, default_memories

    present = sorted(p.name for p in (root / "memories").iterdir() if p.is_dir())
    embedders = make_embedders("" if text_encoder == "none" else text_encoder)
    mems = default_memories(embedders, include=names or present)
    return MemorySystem(
        mems, embedders=embedders, config=MemorySystemConfig(root=str(root), checkpoint_every=0)
    )


def _info(args: argparse.Namespace) -> int:
    root = _check_root(args.root)
    system = _open(root, args.text_encoder)
    try:
        st = system.stats()
        print(f"memory store {root}")
        for m in system.memories:
            mem_dir = root / "memories" / m.name
            cur = mem_dir / "CURRENT"
            ckpt = cur.read_text().strip() if cur.exists() else "(none)"
            size = sum(p.stat().st_size for p in mem_dir.rglob("*") if p.is_file())
            print(f"  {m.name:<10} {len(m):>8} records   checkpoint {ckpt}   {size / 1e6:.2f} MB")
        print(f"  journal: {st['replayed']} message(s) after the checkpoints (replayed on open)")
        for what, why in st["load_errors"].items():
            print(f"  problem: {what}: {why}")
    finally:
        system.close(checkpoint=False)
    return 0


def _ask(args: argparse.Namespace) -> int:
    from engram.memory.node import embed_query
    from engram.runtime.messages import MemoryQuery

    root = _check_root(args.root)
    names = [n.strip() for n in args.memories.split(",") if n.strip()]
    system = _open(root, args.text_encoder)
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
        print(f"{i:>2}. [{h.memory}] {h.score:.3f}  {h.text}{where}  (t={h.stamp_ns / 1e9:.1f} s)")
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
