"""Fleet memory: several robots' long-term memories in one Milvus (``pymilvus``, imported
lazily), recall across the fleet with each robot named in the provenance.

Chosen by the memory node's ``store`` setting (``sqlite``, the default: nothing
changes; ``milvus://host:port`` or a Milvus Lite ``path/x.db``). Modules: ``config``
(``FleetConfig``, the URI forms), ``rows`` (what of each memory goes to the fleet),
``outbox`` (the local queue that keeps a robot working while Milvus is down),
``milvus`` (the store), ``mirror`` (``FleetMirror``: capture, push, recall),
``lite`` (a Milvus Lite server process for one machine and tests), ``transfer``
(export / import between a robot's SQLite store and Milvus).
"""

from engram.memory.fleet.config import FleetConfig, milvus_uri
from engram.memory.fleet.milvus import FleetUnavailable, MilvusFleetStore
from engram.memory.fleet.mirror import FleetMirror, attach_fleet
from engram.memory.fleet.outbox import Outbox

__all__ = [
    "FleetConfig",
    "FleetMirror",
    "FleetUnavailable",
    "MilvusFleetStore",
    "Outbox",
    "attach_fleet",
    "milvus_uri",
]
