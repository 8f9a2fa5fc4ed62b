"""Settings of the fleet memory backend (``FleetConfig``) and the ``store`` URI forms."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DEFAULT_MEMORIES", "FleetConfig", "milvus_uri"]

#: the long-term memories mirrored to the fleet store (registry names)
DEFAULT_MEMORIES = ("temporal", "episodic", "semantic", "spatial")


@dataclass
class FleetConfig:
    """Where the fleet store is, who this robot is, and how its outbox syncs."""

    uri: str = ""  # "milvus://host:port", "http(s)://host:port" or a Milvus Lite "path/x.db"
    robot_id: str = ""  # this robot's name: provenance of its rows and the own/fleet filter
    prefix: str = "engram"  # collection name prefix (one collection per vector space + dim)
    outbox: str = ""  # SQLite file of the outbox ("" = in memory: lost if the robot crashes)
    memories: tuple[str, ...] = field(default_factory=lambda: DEFAULT_MEMORIES)  # mirrored
    sync_interval_s: float = 0.5  # background capture + push period; 0 = only on sync()
    batch_rows: int = 256  # rows per upsert call
    timeout_s: float = 2.0  # per Milvus call; a slower or refused call marks the store down
    retry_s: float = 1.0  # wait this long after a failed push before trying again
    durable: bool = False  # fsync the outbox (power loss, not only process kills)
    index: str = "FLAT"  # vector index of new collections (FLAT: exact; AUTOINDEX on a server)
    text_max_chars: int = 2000  # row text is cut to this (Milvus VARCHAR bound 2048)

    def __post_init__(self) -> None:
        if not self.robot_id or not all(c.isalnum() or c in "_.-" for c in self.robot_id):
            raise ValueError(
                f"FleetConfig.robot_id must be a non-empty name of [A-Za-z0-9_.-], "
                f"got {self.robot_id!r}"
            )
        if not self.uri:
            raise ValueError("FleetConfig.uri is empty: give milvus://host:port or a path x.db")
        milvus_uri(self.uri)  # fail now on a bad form
        if self.batch_rows < 1 or self.timeout_s <= 0 or self.retry_s < 0:
            raise ValueError("FleetConfig: batch_rows >= 1, timeout_s > 0, retry_s >= 0")
        if not self.prefix.replace("_", "").isalnum():
            raise ValueError(f"FleetConfig.prefix must be [A-Za-z0-9_], got {self.prefix!r}")


def milvus_uri(store: str) -> str:
    """The pymilvus URI of a ``store`` setting: ``milvus://host:port`` -> ``http://host:port``,
    ``milvus+https://host:port`` -> ``https://...``, ``http(s)://`` as is, a path ending
    in ``.db`` (``milvus-lite://path/x.db`` or plain) -> that path (pymilvus runs Milvus
    Lite in this process). Raises ``ValueError`` naming the accepted forms."""
    s = store.strip()
    if s.startswith("milvus://"):
        rest = s[len("milvus://") :]
        if rest.endswith(".db"):
            return rest
        if not rest:
            raise ValueError(f"store {store!r}: milvus:// needs host:port")
        return "http://" + rest
    if s.startswith("milvus+https://"):
        return "https://" + s[len("milvus+https://") :]
    if s.startswith("milvus-lite://"):
        s = s[len("milvus-lite://") :]
    if s.startswith(("http://", "https://")):
        return s
    if s.endswith(".db"):
        return s
    raise ValueError(
        f"store {store!r}: expected 'sqlite', milvus://host:port, http(s)://host:port "
        "or a Milvus Lite file path ending in .db"
    )
