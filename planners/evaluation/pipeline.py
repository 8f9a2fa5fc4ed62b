"""The lockstep pipeline: the ``launch/sim_full.yaml`` graph, driven step by step.

``Pipeline`` loads the graph (``engram.runtime.launcher.load_graph``) with the
evaluation's overrides (``EvalConfig`` sizes, the task, the seed; the memory and
planner nodes dropped for the ablations or when a memory node is shared) and builds
its nodes on one in-process bus (``build_nodes``): ``sim`` (MuJoCo task; frames with
depth and segmentation, robot state, audio, instructions) -> ``perception``
(open_clip encoder, segmentation objects with 3D centroids, VAD sound events) ->
``memory`` (spatial, temporal, episodic, semantic, working; recall over
``/memory/query``) -> ``planner`` (memory-grounded plan, skill controllers, critic,
loop detector) -> ``/actions`` -> ``sim``. The graph file is the only wiring; this
module only clocks it.

Reproducibility. The harness clocks the graph in lockstep: the simulator waits for
the planner's chunk at every control step (the sim's ``pace`` hook), and the planner
is stepped only when perception, memory and the planner have handled everything
published so far. So a seed gives the same episode, the same percepts and the same
decisions. ``engram launch launch/sim_full.yaml`` runs the same nodes free-running.

Used by ``engram eval`` (``engram.planners.evaluation.tasks``, ``.memory_qa``) and
``engram demo``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from engram.planners.policies.diffusion.checkpoint import DEFAULT_CHECKPOINT
from engram.runtime import registry

__all__ = [
    "GRAPH",
    "EvalConfig",
    "Pipeline",
    "camera_perception_params",
    "graph_overrides",
    "make_memory_node",
]

#: the launch graph the evaluation runs (``launch/<GRAPH>.yaml``)
GRAPH = "sim_full"


@dataclass
class EvalConfig:
    """Sizes of the evaluation pipeline (defaults: the full run; ``quick()``: tests).

    They override the graph's node params (``graph_overrides``)."""

    width_px: int = 320  # camera frame width (tabletop: enough pixels for 4 cm objects)
    height_px: int = 240  # camera frame height
    apartment_width_px: int = 192  # camera frame width in the apartment
    apartment_height_px: int = 144  # camera frame height in the apartment
    camera_rate_hz: float = 10.0  # frames per simulated second (tabletop)
    apartment_camera_rate_hz: float = 5.0  # frames per simulated second (apartment)
    # perception's image-text encoder in both modes: "sim_clip" (trained on the sim's
    # renders, shipped) or "clip" (open_clip ``perception_model``, random weights here)
    image_encoder: str = "sim_clip"
    perception_model: str = "engram-vit-small"  # open_clip architecture (random weights)
    voxel_size_m: float = 0.005  # perception point downsampling (fine: grasp yaw from points)
    depth_stride_px: int = 1  # back-project every pixel
    min_object_pixels: int = 8  # segments smaller than this are not objects (a far 3 cm cube)
    step_timeout_s: float = 60.0  # one lockstep step may take this long (wall) before failing
    episode_timeout_s: float = 900.0  # one episode may take this long (wall)
    memories: tuple[str, ...] = ()  # memory names to run; () = all default memories
    text_encoder: str = "minilm"  # memory node's query encoder ("" = none)
    attempts: int = 3  # lifelong: attempts per layout
    # "ground_truth": the sim's segmentation gives identity and labels; "camera": RGB-D and
    # pose only, perception proposes, tracks and names objects (the sim-trained encoder)
    perception: str = "ground_truth"
    # camera mode: the robot's self-filter, support-plane removal, chromaticity edges and
    # the object size limit (False: the first camera mode's proposals, for before/after)
    camera_filters: bool = True

    @classmethod
    def quick(cls) -> EvalConfig:
        """Small and fast: the tests and ``--quick``."""
        return cls(
            width_px=240,
            height_px=180,
            apartment_width_px=128,
            apartment_height_px=96,
            apartment_camera_rate_hz=2.5,
            perception_model="engram-vit-tiny",
            attempts=2,
        )


def _memory_params(config: EvalConfig, root: str = "") -> dict[str, Any]:
    return {
        "root": root,  # persist to this directory ("" = in memory)
        "memories": list(config.memories),
        "text_encoder": config.text_encoder,
        "consolidate_every_s": 0.0,  # lockstep: no wall-clock consolidation
        "heartbeat_hz": 0.0,
    }


def graph_overrides(
    config: EvalConfig,
    task: str,
    *,
    seed: int = 0,
    episodes: int = 1,
    use_memory: bool = True,
    driver: str = "stop",
    hide_show: bool = False,
    memory_root: str = "",
    executor: str = "skills",
    mode: str = "planner",
    checkpoint: str = DEFAULT_CHECKPOINT,
) -> dict[str, dict[str, Any]]:
    """Per-node params for ``load_graph``: the sizes of ``config`` for ``task``'s kind
    (tabletop or apartment), and the lockstep harness's settings (no heartbeats, no
    periodic consolidation, the planner stepped by the harness, one frame at a time);
    ``executor`` / ``mode`` / ``checkpoint``: who moves the robot (``Pipeline``)."""
    apartment = registry.get("task", task).kind == "apartment"
    width = config.apartment_width_px if apartment else config.width_px
    height = config.apartment_height_px if apartment else config.height_px
    rate = config.apartment_camera_rate_hz if apartment else config.camera_rate_hz
    overrides = {
        "sim": {
            "task": task,
            "seed": seed,
            "episodes": episodes,
            "camera_rate_hz": rate,
            "width_px": width,
            "height_px": height,
            "clock": "lockstep",
            "driver": driver,  # acts until the planner's first chunk (stop: holds still)
            "wait_for_actions_s": 0.0,  # the harness waits for the chunk (pace)
            "watchdog_timeout_s": 1.0,
            "hide_show_frames": hide_show,
            "heartbeat_hz": 0.0,
            "perception": config.perception,
        },
        "perception": {
            "encoder": config.image_encoder,
            "model_name": config.perception_model,
            "batch_size": 1,
            "max_queue": 8,
            "voxel_size_m": config.voxel_size_m,
            "depth_stride_px": config.depth_stride_px,
            "audio_enabled": apartment,
            "objects": {"min_object_pixels": config.min_object_pixels},
            "heartbeat_hz": 0.0,
        },
        "memory": _memory_params(config, memory_root),
        "planner": {
            "use_memory": use_memory,
            "autotick": False,  # the harness steps the planner
            "seed": seed,
            "heartbeat_hz": 0.0,
            "executor": executor,
        },
        "policy": {
            "executor": executor,
            "mode": mode,
            "checkpoint": checkpoint,
            "use_memory": use_memory,  # the same model, its own memory bank off
            "task": task,
            "autotick": False,  # the harness steps the policy node after the planner
            "seed": seed,
            "heartbeat_hz": 0.0,
        },
    }
    if config.perception == "camera":
        camera = camera_perception_params(
            filters=config.camera_filters, scene="apartment" if apartment else "tabletop"
        )
        overrides["sim"]["self_filter"] = config.camera_filters
        if apartment and config.camera_filters:
            # a thing in view is matched in several frames; a proposal matched only once (a
            # table top's edge, a leg or a speck named "brown teddy bear") is not reported.
            # Since far things are proposed as small objects, the quick 2.5 Hz tour also
            # sees them more than once (round 4, without them: once, and min_hits was 1)
            camera["tracker"]["min_hits"] = 2
        overrides["perception"]["objects"].update(camera.pop("objects"))
        overrides["perception"].update(camera)
        # perception's labels name kinds (three cups are all "cup"): key objects by id
        overrides["planner"]["key_objects_by_id"] = True
    elif config.perception != "ground_truth":
        raise ValueError(
            f"EvalConfig.perception must be ground_truth or camera, got {config.perception!r}"
        )
    return overrides


def camera_perception_params(*, filters: bool = True, scene: str = "tabletop") -> dict[str, Any]:
    """Perception as on a real camera, in the simulation: the sim-trained image-text
    encoder (``sim_clip``) names the proposals from the words for the sim's objects.
    ``filters``: proposals without the robot's pixels (the sim's self-filter), support
    planes, shading edges and furniture (False: colour and depth edges only).
    ``scene``: "tabletop" or "apartment": the vocabulary is the kinds of things found
    there (an open-vocabulary detector is given the words of its deployment; a far red
    mug in the apartment is then not called a red cube)."""
    from engram.sim.object_kinds import APARTMENT_KINDS, BACKGROUND, OBJECT_CLASSES

    if scene not in ("tabletop", "apartment"):
        raise ValueError(f"scene must be tabletop or apartment, got {scene!r}")
    kinds = [k for k in OBJECT_CLASSES if (k in APARTMENT_KINDS) == (scene == "apartment")]
    words = {"vocabulary": kinds, "prompt_template": "a photo of a {}"}
    if filters:  # a word for what is no object; proposals it names are dropped
        words = {
            "vocabulary": [*kinds, BACKGROUND[0]],
            "prompt_template": "a photo of a {}",
            "ignore_labels": [BACKGROUND[0]],
            # apartment: furniture parts (brown legs, a table top's edge) win "brown teddy
            # bear" by softmax while as close to "wall or furniture" (cosine ratio >= 0.34;
            # its things <= 0.23). Not on the tabletop: its grey tray reaches 0.38
            "ignore_cos_ratio": 0.3 if scene == "apartment" else 0.0,
        }
    if not filters:
        return {"encoder": "sim_clip", "objects": words}
    return {
        "encoder": "sim_clip",
        # the planner reads lamps off the thumbnail inside each object's box; a whole
        # button's box (cap and housing) needs more than 64 px across the frame
        "thumbnail_width_px": 160,
        # a lit lamp looks different but stays put: same place, same track (and label)
        # an object seen again after its track aged out (the robot turned away) keeps its
        # id when it is where its track was, within 3/4 of its size: one object, one record
        "tracker": {"same_place_m": 0.02, "reid_extent_frac": 0.75},
        "objects": {
            **words,
            "depth_required": True,  # self-filtered robot pixels propose nothing
            "remove_support_planes": True,  # table top and floor are not objects
            "remove_under_support": True,  # nor the table's legs beneath its top
            # tabletop: the base of a cube on the table (removed with the plane) or in a
            # tray (behind its rim) is hidden; its box reaches down to the table, so a top
            # grasp closes mid-height, not at the top edge (``perception.bottoms``)
            "hidden_bottom_max_gap_m": 0.03 if scene == "tabletop" else 0.0,
            # a plane holds >= 3% of the pixels in the apartment: a table top seen from the
            # head camera is small, and the teddy on it (brown on brown) only separates
            # from the table once its top is removed as a plane (tabletop: 5%)
            "support_plane_min_frac": 0.03 if scene == "apartment" else 0.05,
            "chroma_edges": True,  # a cup's lit and shaded faces are one region
            "color_edge_threshold": 0.2,  # hue changes only (chromaticity is noisier)
            "proposal_width_px": 640,  # full resolution: a 3 cm cube is 6 px wide
            # the apartment's rooms show many walls and furniture faces (larger regions,
            # proposed first) besides its few small things
            "max_proposals": 24 if scene == "apartment" else 12,
            # tabletop objects; furniture and walls are not (the apartment's plant, its
            # leaves and pot joined, stands 31 cm)
            "max_object_size_m": 0.34 if scene == "apartment" else 0.3,
            # a button's cap and housing are one button; in the apartment a plant's leaves
            # and pot are one plant (its pot alone was named "brown teddy bear")
            "merge_parts_max_m": 0.34 if scene == "apartment" else 0.075,
            "min_thickness_m": 0.008,  # points in one vertical plane: a wall or cabinet face
            "floor_z_m": 0.0,  # the sim's floor: what stands on it tall and thin is a leg
            "grow_regions_px": 3,  # colour-edge pixels join the object they lie on
            # apartment: a thing 4 m away is a few pixels in the head camera; the smoothed
            # colour edges swallow it into the shelf behind (``perception.small_objects``)
            "small_object_max_px": 100 if scene == "apartment" else 0,
            "small_object_max_side_px": 16,
            # apartment: a far book split into a carved blob and the rest of its region is
            # one book (``perception.parts``); one of each kind there, metres apart. Splits
            # seen on tours: a book's carved blob 3 cm off, a teddy's head 8 cm above its
            # body, a bottle's top 9 cm above its base (across the shaded neck): 0.10 m
            "join_same_label_m": 0.10 if scene == "apartment" else -1.0,
        },
    }


def _build(bus: Any, params: dict[str, dict[str, Any]], keep: set[str]) -> dict[str, Any]:
    """The nodes ``keep`` of the graph with ``params``, constructed on ``bus``. What the
    dropped nodes would publish is declared external: the harness (or a shared memory
    node already on ``bus``) stands in for them."""
    from engram.runtime.launcher import build_nodes, graph_path, load_graph
    from engram.runtime.node import load_node_class

    graph = load_graph(GRAPH, params={k: v for k, v in params.items() if k in keep})
    dropped = [n for n in graph["nodes"] if n["name"] not in keep]
    graph["nodes"] = [n for n in graph["nodes"] if n["name"] in keep]
    external = dict(graph.get("external_topics") or {})
    for spec in dropped:
        remap = spec.get("topics") or {}
        for port, decl in load_node_class(spec["type"]).OUTPUTS.items():
            external.setdefault(remap.get(port) or decl.topic or f"/{port}", decl.type)
    graph["external_topics"] = external
    return build_nodes(graph, bus, source=str(graph_path(GRAPH)))


def make_memory_node(config: EvalConfig, *, bus: Any, root: str = "") -> Any:
    """The graph's memory node as the evaluation (and ``engram demo``) runs it, alone:
    for a memory kept across pipelines (lifelong attempts, the demo's store on disk);
    ``root``: persist to this directory ("" = in memory)."""
    return _build(bus, {"memory": _memory_params(config, root)}, {"memory"})["memory"]


@dataclass
class Pipeline:
    """The ``sim_full`` graph on one in-process bus, in lockstep (see the module doc).

    ``memory_node`` may be passed in to keep memory across pipelines (lifelong)."""

    task: str
    seed: int
    episodes: int = 1
    use_memory: bool = True
    planner: bool = True  # False: the sim's driver acts (memory QA streams)
    driver: str = "stop"  # who acts when no planner: expert | reactive | stop
    hide_show: bool = False  # no camera frames of the show phase (the lifelong check)
    config: EvalConfig = field(default_factory=EvalConfig)
    memory_node: Any = None
    bus: Any = None  # share a bus (and a running memory node) across pipelines
    on_episode: Any = None  # callback(report, env) after each episode
    before_question: Any = None  # callback(pipeline, env) at each step (memory QA)
    # who moves the robot: "skills" (the planner's controllers) or "expert" (the policy
    # node: the diffusion action expert); mode with the expert: "planner" (it executes
    # the planner's subgoals) or "end_to_end" (instruction + its own memory bank only:
    # no planner, no memory node; it watches while the sim's Instruction has phase
    # "show" and acts from the "act" one, as the env harness observes until "act")
    executor: str = "skills"
    mode: str = "planner"
    checkpoint: str = DEFAULT_CHECKPOINT  # the expert's checkpoint (shipped name or path)

    def __post_init__(self) -> None:
        from engram.runtime.bus import InProcBus

        cfg = self.config
        if self.executor not in ("skills", "expert"):
            raise ValueError(f"executor must be 'skills' or 'expert', got {self.executor!r}")
        if self.mode not in ("planner", "end_to_end"):
            raise ValueError(f"mode must be 'planner' or 'end_to_end', got {self.mode!r}")
        if self.task not in registry.known("task"):
            known = ", ".join(sorted(registry.known("task")))
            raise ValueError(f"unknown task {self.task!r}; known: {known}")
        self.owns_bus = self.bus is None
        if self.bus is None:
            self.bus = InProcBus(f"eval-{self.task}-{self.seed}")
        params = graph_overrides(
            cfg,
            self.task,
            seed=self.seed,
            episodes=self.episodes,
            use_memory=self.use_memory,
            driver=self.driver if not self.planner else "stop",
            hide_show=self.hide_show,
            executor=self.executor,
            mode=self.mode,
            checkpoint=self.checkpoint,
        )
        keep = {"sim", "perception"}
        end_to_end = self.planner and self.executor == "expert" and self.mode == "end_to_end"
        if self.use_memory and self.memory_node is None and not end_to_end:
            keep.add("memory")
        if self.planner and not end_to_end:
            keep.add("planner")
        if self.planner and self.executor == "expert":
            keep.add("policy")
        nodes = _build(self.bus, params, keep)
        self.sim = nodes["sim"]
        self.sim.set_hooks(pace=self._pace, on_episode_end=self._after_episode)
        self.perception = nodes["perception"]
        self.nodes: list[Any] = [self.perception]
        self.owns_memory = False
        if self.use_memory and not end_to_end:
            if self.memory_node is None:
                self.memory_node = nodes["memory"]
                self.owns_memory = True
            elif self.memory_node.bus is not self.bus:
                raise ValueError("a shared memory node must be on the pipeline's bus")
            self.nodes.append(self.memory_node)
        self.planner_node = nodes.get("planner")
        if self.planner_node is not None:
            self.nodes.append(self.planner_node)
        self.policy_node = nodes.get("policy")
        if self.policy_node is not None:
            self.nodes.append(self.policy_node)
        self.reports: list[dict[str, Any]] = []
        self.steps = 0
        self._error: BaseException | None = None

    # ---- lockstep ------------------------------------------------------------------------
    def settle(self, timeout_s: float | None = None) -> None:
        """Wait until every node has handled what was published (and perception and
        memory finished their background work)."""
        deadline = time.monotonic() + (timeout_s or self.config.step_timeout_s)
        quiet = 0
        while quiet < 2:
            if time.monotonic() > deadline:
                raise TimeoutError("the pipeline did not settle in time")
            busy = any(n.input_backlog() for n in self.nodes)
            c = self.perception.counters
            frames_done = (
                c["frames_skipped"]
                + c["frames_dropped"]
                + c["frames_processed"]
                + c["frame_errors"]
            )
            if frames_done < c["frames_received"] or len(self.perception.work):
                busy = True
            elif not self.perception.work.wait_empty(0.0):
                busy = True
            speech_done = sum(
                c.get(k, 0) for k in ("transcripts", "transcripts_empty", "speech_dropped")
            )
            if speech_done < c.get("speech_segments", 0) - c.get("audio_errors", 0):
                busy = True
            if self.memory_node is not None and self.use_memory:
                if not self.memory_node.system.flush(timeout_s=0.0):
                    busy = True
            quiet = 0 if busy else quiet + 1
            if busy:
                time.sleep(0.0005)

    def _pace(self) -> None:
        """The sim's ``pace`` hook, before each step's action: settle the pipeline, step
        the planner, then (with a planner) wait for the chunk that produced."""
        self._before_action()
        timeout_s = self.config.step_timeout_s
        if self.planner and not self.sim.wait_for_chunk(timeout_s) and self.sim.running:
            raise TimeoutError(f"no action chunk within {timeout_s} s")

    def _before_action(self) -> None:
        try:
            self.settle()
            if self.before_question is not None:
                self.before_question(self, self.sim.env)
            chunk = None
            if self.planner_node is not None:
                chunk = self.planner_node.step()
            if self.policy_node is not None:
                if self.planner_node is not None:
                    self.settle()  # the policy node reads the subgoal just published
                chunk = self.policy_node.step()
            if chunk is None and (self.planner_node or self.policy_node) is not None:
                # no instruction / state yet: hold still so the sim keeps pace
                self._publish_hold()
            self.steps += 1
        except Exception as exc:  # noqa: BLE001 - surfaced by run()
            self._error = exc
            self.sim.request_stop()
            raise

    def _publish_hold(self) -> None:
        import numpy as np

        from engram.runtime.messages import ActionChunk

        env = self.sim.env
        space = env.controller.space
        self.bus.publish(
            "/actions",
            ActionChunk(
                action_space=space.name,
                actions=np.asarray(env.stop_action(), np.float32)[None],
                dt_s=env.config.control_dt_s,
            ),
        )

    def _after_episode(self, report: dict[str, Any], env: Any) -> None:
        from engram.runtime.messages import PlanStep

        report["ground_truth_log"] = env.ground_truth()
        self.settle()
        if self.planner_node is not None and self.use_memory:
            # the environment's verdict on this attempt: closes the episode in memory
            self.bus.publish(
                "/plan",
                PlanStep(
                    stamp_ns=self.sim.stamp_ns(),  # the episode's end
                    skill="episode",
                    status="succeeded" if report["success"] else "failed",
                    reason="outcome reported by the environment",
                    episode_id=f"{env.task_name}-{report['seed']}",
                ),
            )
            self.settle()
        if self.planner_node is not None:
            loop = self.planner_node.loop
            status, reason = loop.status, loop.reason
            if status in ("idle", "running"):  # the environment ended the episode first
                status = "succeeded" if report["success"] else "unfinished"
                outcome = "success" if report["success"] else "no success"
                reason = (
                    f"the environment ended the episode ({outcome}) while the planner's "
                    f"loop was still {loop.status}"
                )
            report["planner"] = {
                "status": status,  # succeeded | failed | unfinished | done
                "reason": reason,
                "decisions": [
                    {"question": d.question, "answer": d.answer, "source": d.source}
                    for d in loop.decisions
                ],
                "loop_interventions": list(loop.loop.fired),
                "memory_queries": self.planner_node.memory.queries,
            }
        self.reports.append(report)
        if self.on_episode is not None:
            self.on_episode(report, env)

    # ---- running -------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        nodes = [*self.nodes, self.sim]
        started = []
        try:
            for node in nodes:
                if node is self.memory_node and node.state == "running":
                    continue
                node.start()
                started.append(node)
            limit = self.config.episode_timeout_s * max(1, self.episodes)
            if not self.sim.wait(limit):
                raise TimeoutError(f"{self.task}: episodes did not finish in {limit:.0f} s")
            if self._error is not None:
                raise self._error
            if self.sim.error:
                raise RuntimeError(self.sim.error)
        finally:
            for node in reversed(started):
                if node is self.memory_node and not self.owns_memory:
                    continue
                node.stop()
            if self.owns_bus:
                self.bus.close()
        return self.reports
