"""``engram keys``: make a ZeroMQ CURVE key pair for a node.

Writes ``DIR/NAME.key`` (public key: share it) and ``DIR/NAME.key_secret`` (secret key:
mode 0600, keep it on the node), in the ZeroMQ certificate format that
``zmq.auth.load_certificate`` reads. To let node B talk to node A, copy ``B.key`` into A's
allow-list directory (and vice versa); every node also needs the broker's ``.key``. Then::

    curve = CurveConfig.from_files("keys/robot.key_secret",
                                   server_public_key_file="peers/broker.key",
                                   allowed_keys_dir="peers/")
    bus = make_bus("tcp://10.0.0.2:5550", curve=curve)
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

__all__ = ["add_arguments", "make_keys", "run"]

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n", 1)[1] if __doc__ else None
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("name", help="node name: the files are NAME.key and NAME.key_secret")
    parser.add_argument(
        "-d",
        "--dir",
        default="keys",
        help="directory to write the key files into (created if missing; default: keys)",
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite an existing key pair of that name"
    )


def make_keys(
    key_dir: str | os.PathLike[str], name: str, *, force: bool = False
) -> tuple[Path, Path]:
    """Create ``key_dir/name.key`` and ``key_dir/name.key_secret``; returns (public, secret).

    Raises ``ValueError`` for a bad name and ``FileExistsError`` unless ``force``.
    """
    import zmq.auth

    if not _NAME_RE.match(name):
        raise ValueError(f"bad key name {name!r}: use letters, digits, '_', '-' and '.'")
    directory = Path(key_dir)
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    existing = [p for p in (public, secret) if p.exists()]
    if existing and not force:
        raise FileExistsError(
            f"{', '.join(map(str, existing))} already exist(s); pass --force to overwrite"
        )
    for path in existing:
        path.unlink()
    old_umask = os.umask(0o077)  # the secret file must never be readable by others
    try:
        public_file, secret_file = zmq.auth.create_certificates(directory, name)
    finally:
        os.umask(old_umask)
    os.chmod(public_file, 0o644)
    os.chmod(secret_file, 0o600)
    return Path(public_file), Path(secret_file)


def run(args: argparse.Namespace) -> int:
    import zmq.auth

    try:
        public, secret = make_keys(args.dir, args.name, force=args.force)
    except (ValueError, FileExistsError, OSError) as exc:
        print(f"engram keys: {exc}")
        return 1
    public_key, _ = zmq.auth.load_certificate(public)
    print(f"public key:  {public}  ({public_key.decode()})")
    print(f"secret key:  {secret}  (mode 0600; keep it on this node)")
    print("share the public .key file with peers: they put it in their allow-list directory")
    return 0
