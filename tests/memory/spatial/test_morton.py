import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import engram.memory.spatial.morton as morton

_idx = st.integers(min_value=0, max_value=(1 << 21) - 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_idx, _idx, _idx), min_size=1, max_size=50))
def test_encode_decode_round_trip(triples):
    ijk = np.array(triples, np.int64)
    codes = morton.encode(ijk[:, 0], ijk[:, 1], ijk[:, 2])
    assert codes.dtype == np.int64 and np.all(codes >= 0)
    np.testing.assert_array_equal(morton.decode(codes), ijk)


@settings(max_examples=100, deadline=None)
@given(_idx, _idx, _idx, st.integers(min_value=0, max_value=20))
def test_parent_code_is_a_prefix(i, j, k, level):
    code = int(morton.encode(np.array([i]), np.array([j]), np.array([k]))[0])
    parent = morton.encode_int(i >> level, j >> level, k >> level)
    assert code == morton.encode_int(i, j, k)
    assert code >> (3 * level) == parent
    # the leaf lies in the parent's contiguous child range
    assert parent << (3 * level) <= code < (parent + 1) << (3 * level)


def test_sorted_order_is_hierarchical():
    rng = np.random.default_rng(0)
    ijk = rng.integers(0, 1 << 21, size=(5000, 3))
    codes = np.sort(morton.encode(ijk[:, 0], ijk[:, 1], ijk[:, 2]))
    for level in (1, 4, 9):
        parents = codes >> (3 * level)
        assert np.all(np.diff(parents) >= 0)


def test_points_to_index_and_centers():
    pts = np.array([[0.0, 0.0, 0.0], [0.049, -0.001, 1.0], [-2.5, 3.33, -0.2]])
    idx = morton.points_to_index(pts, 0.05)
    np.testing.assert_array_equal(idx[0], [morton.OFFSET] * 3)
    np.testing.assert_array_equal(idx[1] - morton.OFFSET, [0, -1, 20])
    codes = morton.encode(idx[:, 0], idx[:, 1], idx[:, 2])
    centers = morton.cell_centers(codes, 0.05)
    assert np.all(np.abs(centers - pts) <= 0.025 + 1e-9)


def test_points_out_of_range_are_rejected():
    import pytest

    with pytest.raises(ValueError, match="range"):
        morton.points_to_index(np.array([[1e6, 0.0, 0.0]]), 0.05)


def test_sorted_unique_matches_numpy():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 50, 1000)
    u, starts = morton.sorted_unique(a)
    np.testing.assert_array_equal(u, np.unique(a))
    np.testing.assert_array_equal(np.sort(a)[starts], u)
