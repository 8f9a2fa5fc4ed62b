"""Spatial memory: sparse Morton-keyed octree with semantics, topology graph of places,
static/dynamic decoupling (Mem4D) and short-/long-term memory (Mem4Nav).

Public surface:

- ``SpatialMemory``, ``SpatialConfig``: the ``Memory`` implementation (``memory/base.py``)
  the memory system fans ``Percept`` / ``RobotState`` messages and queries out to.
- ``SparseOctree``, ``OctreeConfig``, ``InsertStats``, ``VoxelSet``: the voxel map.
- ``PlaceGraph``, ``PlaceGraphConfig``, ``Place``, ``Path``: the topology graph.
- ``TransientDynamicsMemory``, ``DynamicsConfig``, ``classify_motion``: static/dynamic.
- ``ShortTermMemory``, ``ShortTermConfig``: the robot-relative short-term cache.
- ``ObjectTable``, ``ObjectRecord``: long-term object records.

Only numpy is imported here (no torch, open3d, mujoco).
"""

from engram.memory.spatial.config import SpatialConfig
from engram.memory.spatial.dynamics import DynamicsConfig, TransientDynamicsMemory, classify_motion
from engram.memory.spatial.memory import SpatialMemory
from engram.memory.spatial.objects import ObjectRecord, ObjectTable
from engram.memory.spatial.octree import SparseOctree
from engram.memory.spatial.places import Path, Place, PlaceGraph, PlaceGraphConfig
from engram.memory.spatial.short_term import ShortTermConfig, ShortTermMemory
from engram.memory.spatial.voxels import InsertStats, OctreeConfig, VoxelSet

__all__ = [
    "DynamicsConfig",
    "InsertStats",
    "ObjectRecord",
    "ObjectTable",
    "OctreeConfig",
    "Path",
    "Place",
    "PlaceGraph",
    "PlaceGraphConfig",
    "ShortTermConfig",
    "ShortTermMemory",
    "SparseOctree",
    "SpatialConfig",
    "SpatialMemory",
    "TransientDynamicsMemory",
    "VoxelSet",
    "classify_motion",
]
