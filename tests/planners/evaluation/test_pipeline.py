"""The lockstep pipeline is the ``launch/sim_full.yaml`` graph with overrides (no second
wiring): nodes, params and the dropped nodes, checked without running an episode."""

from __future__ import annotations

import pytest

from engram.planners.evaluation.pipeline import (
    EvalConfig,
    Pipeline,
    graph_overrides,
    make_memory_node,
)
from engram.runtime.bus import InProcBus
from engram.runtime.launcher import load_graph

QUICK = EvalConfig.quick()


def test_overrides_name_only_nodes_and_params_of_the_graph():
    graph = {n["name"]: n for n in load_graph("sim_full")["nodes"]}
    for task in ("cups", "where_heard"):
        params = graph_overrides(QUICK, task, seed=3)
        assert set(params) <= set(graph)
        load_graph("sim_full", params=params)  # names known nodes only


def test_sizes_follow_the_task_kind():
    table = graph_overrides(QUICK, "cups")
    flat = graph_overrides(QUICK, "fetch_seen")
    assert (table["sim"]["width_px"], table["sim"]["height_px"]) == (240, 180)
    assert (flat["sim"]["width_px"], flat["sim"]["height_px"]) == (128, 96)
    assert not table["perception"]["audio_enabled"] and flat["perception"]["audio_enabled"]


def test_camera_mode_settings_per_scene_and_frame_rate():
    """Camera mode: sim_clip in both modes; the apartment's planes, parts and background
    ratio; re-identification everywhere; min_hits 2 in the apartment at any frame rate (a
    proposal matched once was a table edge, a leg or a speck; with small-object proposals
    far things are matched more than once even at the quick 2.5 Hz), small-object
    proposals in the apartment only."""
    from dataclasses import replace

    assert graph_overrides(QUICK, "cups")["perception"]["encoder"] == "sim_clip"
    cam_quick = replace(QUICK, perception="camera")
    cam_full = replace(EvalConfig(), perception="camera")
    table = graph_overrides(cam_full, "cups")["perception"]
    flat_quick = graph_overrides(cam_quick, "fetch_seen")["perception"]
    flat_full = graph_overrides(cam_full, "fetch_seen")["perception"]
    assert table["tracker"]["reid_extent_frac"] > 0 and "min_hits" not in table["tracker"]
    assert flat_quick["tracker"]["min_hits"] == 2 and flat_full["tracker"]["min_hits"] == 2
    assert flat_quick["objects"]["small_object_max_px"] > 0
    assert table["objects"]["small_object_max_px"] == 0
    # a cube's hidden base (table band, tray rim): tabletop only (round 5b)
    assert table["objects"]["hidden_bottom_max_gap_m"] > 0
    assert flat_quick["objects"]["hidden_bottom_max_gap_m"] == 0
    assert table["objects"]["ignore_cos_ratio"] == 0 < flat_full["objects"]["ignore_cos_ratio"]
    assert (
        flat_full["objects"]["support_plane_min_frac"] < table["objects"]["support_plane_min_frac"]
    )
    unfiltered = replace(cam_full, camera_filters=False)
    assert "tracker" not in graph_overrides(unfiltered, "fetch_seen")["perception"]


@pytest.mark.parametrize(
    ("use_memory", "planner", "names"),
    [
        (True, True, {"perception", "memory", "planner"}),
        (False, True, {"perception", "planner"}),
        (True, False, {"perception", "memory"}),
    ],
)
def test_pipeline_builds_the_graph_nodes(use_memory, planner, names):
    pipe = Pipeline("cups", 2, use_memory=use_memory, planner=planner, config=QUICK)
    try:
        assert {n.name for n in pipe.nodes} == names
        assert pipe.sim.name == "sim" and pipe.sim.config.seed == 2
        assert pipe.sim.config.clock == "lockstep" and pipe.sim.config.width_px == 240
        assert pipe.perception.config.model_name == QUICK.perception_model
        if planner:
            assert not pipe.planner_node.config.autotick
            assert pipe.planner_node.config.use_memory == use_memory
        else:
            assert pipe.planner_node is None
    finally:
        pipe.bus.close()


def test_a_shared_memory_node_is_the_graphs_memory_node():
    bus = InProcBus("shared")
    try:
        memory = make_memory_node(QUICK, bus=bus)
        assert memory.name == "memory" and memory.config.consolidate_every_s == 0.0
        pipe = Pipeline("count", 0, config=QUICK, bus=bus, memory_node=memory)
        assert pipe.memory_node is memory and not pipe.owns_memory
    finally:
        bus.close()


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown task"):
        Pipeline("nope", 0, config=QUICK)


@pytest.fixture(scope="module")
def tiny_expert():
    from ..policies._expert import tiny_tabletop_checkpoint

    return tiny_tabletop_checkpoint()


@pytest.mark.parametrize(
    ("mode", "names"),
    [
        ("planner", {"perception", "memory", "planner", "policy"}),
        ("end_to_end", {"perception", "policy"}),  # the expert's own bank, no planner
    ],
)
def test_the_expert_executor_adds_the_policy_node(tiny_expert, mode, names):
    pipe = Pipeline(
        "cups", 1, config=QUICK, executor="expert", mode=mode, checkpoint=str(tiny_expert)
    )
    try:
        assert {n.name for n in pipe.nodes} == names
        assert pipe.policy_node.config.mode == mode and pipe.policy_node.active
        assert not pipe.policy_node.config.autotick and pipe.policy_node.config.task == "cups"
        if mode == "planner":  # the planner hands its subgoals over, publishes no chunks
            assert pipe.planner_node.config.executor == "expert"
    finally:
        pipe.bus.close()
    with pytest.raises(ValueError, match="executor must be"):
        Pipeline("cups", 1, config=QUICK, executor="arm")


def test_the_launch_graph_chooses_the_executor_in_one_place():
    graph = {n["name"]: n for n in load_graph("sim_full")["nodes"]}
    assert graph["planner"]["params"]["executor"] == "skills"
    assert graph["policy"]["params"]["executor"] == "skills"  # the YAML anchor
    assert graph["policy"]["type"] == "policy"
