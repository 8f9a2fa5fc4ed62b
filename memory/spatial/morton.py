"""Morton (Z-order) codes for a sparse voxel octree, vectorised with numpy.

A leaf voxel of edge ``voxel_size_m`` has integer index ``ijk = floor(p / voxel_size_m)``
per axis. Indices are shifted by ``OFFSET = 2**20`` so they are non-negative and fit
in 21 bits: the map covers ``[-2**20, 2**20)`` voxels per axis (about +-52 km at 5 cm).
The Morton code interleaves the 21 bits of x, y, z (x in bit 0) into 63 bits, stored
as non-negative ``int64``.

Octree structure comes for free: the parent of a voxel at level ``L`` (cells of edge
``voxel_size_m * 2**L``) has code ``code >> (3 * L)``, and all the leaves inside a cell
are one contiguous range of sorted codes ``[c << 3L, (c + 1) << 3L)``. Sorting leaf
codes therefore sorts every coarser level too, which is what lets the octree answer
queries at a coarser level without rebuilding anything.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BITS",
    "MAX_LEVEL",
    "OFFSET",
    "cell_centers",
    "decode",
    "encode",
    "encode_int",
    "points_to_index",
    "sorted_unique",
]

BITS = 21  # bits per axis
MAX_LEVEL = BITS  # level at which the whole map is one cell
OFFSET = 1 << (BITS - 1)  # added to signed voxel indices
_LIMIT = 1 << (BITS - 1)  # |signed index| must stay below this

_M21 = np.uint64(0x1FFFFF)


def _spread(v: np.ndarray) -> np.ndarray:
    """(N,) uint64 holding 21-bit values -> the bits spread 3 apart (in place)."""
    v &= _M21
    v |= v << np.uint64(32)
    v &= np.uint64(0x1F00000000FFFF)
    v |= v << np.uint64(16)
    v &= np.uint64(0x1F0000FF0000FF)
    v |= v << np.uint64(8)
    v &= np.uint64(0x100F00F00F00F00F)
    v |= v << np.uint64(4)
    v &= np.uint64(0x10C30C30C30C30C3)
    v |= v << np.uint64(2)
    v &= np.uint64(0x1249249249249249)
    return v


def _compact(v: np.ndarray) -> np.ndarray:
    """Inverse of ``_spread``: every third bit -> a 21-bit value (returns a new array)."""
    v = v & np.uint64(0x1249249249249249)
    v = (v ^ (v >> np.uint64(2))) & np.uint64(0x10C30C30C30C30C3)
    v = (v ^ (v >> np.uint64(4))) & np.uint64(0x100F00F00F00F00F)
    v = (v ^ (v >> np.uint64(8))) & np.uint64(0x1F0000FF0000FF)
    v = (v ^ (v >> np.uint64(16))) & np.uint64(0x1F00000000FFFF)
    v = (v ^ (v >> np.uint64(32))) & _M21
    return v


def _spread_int(v: int) -> int:
    out = 0
    for bit in range(BITS):
        out |= ((v >> bit) & 1) << (3 * bit)
    return out


_SPREAD7 = [_spread_int(i) for i in range(128)]  # 7-bit chunks, for small inputs
_SMALL = 16  # inputs up to this size are encoded with Python ints (less call overhead)


def _spread_small(v: int) -> int:
    t = _SPREAD7
    return t[v & 127] | (t[(v >> 7) & 127] << 21) | (t[(v >> 14) & 127] << 42)


def encode_int(ix: int, iy: int, iz: int) -> int:
    """One voxel: offset indices (Python ints, < 2**21) -> its Morton code."""
    return _spread_small(ix) | (_spread_small(iy) << 1) | (_spread_small(iz) << 2)


def _encode_small(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray) -> np.ndarray:
    return np.array(
        [encode_int(x, y, z) for x, y, z in zip(ix.tolist(), iy.tolist(), iz.tolist())],
        dtype=np.int64,
    )


def encode(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray) -> np.ndarray:
    """Offset (non-negative, < 2**21) voxel indices (N,) x3 -> Morton codes (N,) int64."""
    ix, iy, iz = np.asarray(ix), np.asarray(iy), np.asarray(iz)
    if ix.ndim == 1 and len(ix) <= _SMALL:
        return _encode_small(ix, iy, iz)
    if len(ix) <= 4096:  # one stacked pass: fewer numpy calls for small arrays
        v = _spread(np.stack([ix, iy, iz]).astype(np.uint64))
        return (v[0] | (v[1] << np.uint64(1)) | (v[2] << np.uint64(2))).view(np.int64)
    code = _spread(ix.astype(np.uint64))
    code |= _spread(iy.astype(np.uint64)) << np.uint64(1)
    code |= _spread(iz.astype(np.uint64)) << np.uint64(2)
    return code.view(np.int64)


def decode(codes: np.ndarray) -> np.ndarray:
    """Morton codes (N,) int64 -> offset voxel indices (N, 3) int64."""
    c = np.asarray(codes, dtype=np.int64).view(np.uint64)
    if len(c) <= 4096:  # one stacked pass: fewer numpy calls for small arrays
        return _compact(np.stack([c, c >> np.uint64(1), c >> np.uint64(2)], axis=1)).view(np.int64)
    out = np.empty((len(c), 3), dtype=np.int64)
    out[:, 0] = _compact(c)
    out[:, 1] = _compact(c >> np.uint64(1))
    out[:, 2] = _compact(c >> np.uint64(2))
    return out


def points_to_index(points: np.ndarray, voxel_size_m: float) -> np.ndarray:
    """World points (N, 3) -> offset voxel indices (N, 3) int64.

    Raises ``ValueError`` if a point lies outside the addressable map.
    """
    idx = np.floor(np.asarray(points, dtype=np.float64) * (1.0 / voxel_size_m)).astype(np.int64)
    if idx.size and (idx.min() < -_LIMIT or idx.max() >= _LIMIT - 1):
        bound = _LIMIT * voxel_size_m
        raise ValueError(f"points: coordinates outside the map's range of +-{bound:.0f} m")
    idx += OFFSET
    return idx


def cell_centers(codes: np.ndarray, voxel_size_m: float, level: int = 0) -> np.ndarray:
    """Codes of cells at ``level`` (N,) -> cell centres in world metres (N, 3) float64."""
    idx = decode(codes).astype(np.float64)
    edge = float(1 << level)
    return ((idx + 0.5) * edge - OFFSET) * voxel_size_m


def sorted_unique(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique values and, for each, the index of its first element in the sorted
    input: (N,) -> (U,), (U,) ``starts`` (the reduceat boundaries). Faster than
    ``np.unique`` here because it is a plain sort plus a mask."""
    s = np.sort(values)
    if len(s) == 0:
        return s, np.zeros(0, np.int64)
    first = np.empty(len(s), dtype=bool)
    first[0] = True
    np.not_equal(s[1:], s[:-1], out=first[1:])
    return s[first], np.flatnonzero(first)
