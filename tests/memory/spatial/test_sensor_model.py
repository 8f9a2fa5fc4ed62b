"""The sensor model on real and rendered RGB-D of static scenes, judged against open3d's
TSDF of the same frames (issue 16): carving must not erode surfaces nor flag anything
dynamic; the previous model (``OctreeConfig.legacy``) did both."""

import numpy as np
import pytest

from engram.memory.spatial import OctreeConfig, SparseOctree
from tests.memory.spatial._rgbd import (
    K_SAMPLE,
    depth_to_points,
    mujoco_sequence,
    real_sequence,
    surface_agreement,
    tsdf_surface,
)

VS = 0.05


def _run(frames, K, cfg):
    tree = SparseOctree(cfg)
    for i, (depth, pose) in enumerate(frames):
        tree.insert(depth_to_points(depth, K, pose), origin=pose[:3, 3], stamp_ns=i + 1)
    return tree


def _compare(frames, K):
    surface = tsdf_surface(frames, K, VS)
    out = {}
    for name, cfg in (
        ("off", OctreeConfig(voxel_size_m=VS, carve=False)),
        ("new", OctreeConfig(voxel_size_m=VS)),
        ("legacy", OctreeConfig.legacy(voxel_size_m=VS)),
    ):
        tree = _run(frames, K, cfg)
        out[name] = surface_agreement(tree.occupied().centers, surface, VS)
        out[name]["dynamic"] = tree.dynamic_events
        out[name]["flagged"] = int(np.count_nonzero(tree.columns()["flags"] & 1))
        out[name]["free"] = len(tree) - tree.num_occupied()
    return out


def _check(r):
    assert r["new"]["strict_recall"] >= r["off"]["strict_recall"] - 0.03, r
    assert r["new"]["within_one_voxel"] >= 0.995, r
    assert r["new"]["dynamic"] == 0 and r["new"]["flagged"] == 0, r
    assert r["new"]["free"] > 0.8 * r["legacy"]["free"], r  # free space is still carved


def test_real_frames_keep_the_tsdf_surface(rgbd_sample_dir):
    r = _compare(real_sequence(rgbd_sample_dir), K_SAMPLE)
    _check(r)
    assert r["legacy"]["dynamic"] > 0  # the old model flags parts of a static room


@pytest.fixture(scope="module")
def rendered():
    frames, K, _truth = mujoco_sequence(30, width=256, height=192, seed=1)
    return frames, K


def test_rendered_noisy_loop_keeps_the_tsdf_surface(rendered):
    frames, K = rendered
    r = _compare(frames, K)
    _check(r)
    assert r["legacy"]["flagged"] > 20
    assert r["legacy"]["strict_recall"] < r["new"]["strict_recall"]


if __name__ == "__main__":  # print the figures
    f, k, _ = mujoco_sequence(30, width=256, height=192, seed=1)
    print(_compare(f, k))
