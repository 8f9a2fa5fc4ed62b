"""``engram eval``: task success with and without memory, and memory QA.

Usage::

    engram eval --task T|all --episodes N --seed S [--no-memory | --memory-only]
                [--lifelong-layouts K] [--attempts A] [--json out.json] [--quick]
    engram eval memory-qa --episodes N --seed S [--json out.json] [--quick]

Task success. For each task, ``N`` episodes (seeds ``S .. S+N-1``) run through the
full pipeline on one in-process bus: ``SimNode`` (MuJoCo task; frames with depth
and segmentation, robot state, audio, instructions) -> ``PerceptionNode``
(open_clip encoder, segmentation objects with 3D centroids, VAD sound events)
-> ``MemoryNode`` (spatial, temporal, episodic, semantic, working; recall over
``/memory/query``) -> ``PlannerNode`` (memory-grounded plan, skill controllers,
critic, loop detector) -> ``/actions`` -> ``SimNode``. The planner sees the world
only through these messages and memory recalls. Each episode runs in a fresh
pipeline with an empty memory (episodes are independent; learning across attempts
is what the lifelong check below measures). Only the harness looks inside the
simulator: for the outcome and, in the lifelong check, the phase (to hide the show).

By default each task runs twice: with memory and with ``--no-memory`` (the
ablation: no memory node, the planner's recall answers nothing, so it works from
the current view alone and cannot learn from earlier attempts). Subgoals are
executed by the skill controllers, which keep no memory, so nothing else needs
ablating (the diffusion action expert, which is not used here, has its own
switch, ``use_memory=False``). The table shows both per task with the chance
rate of a memoryless guess; the JSON (``--json``) has one
result per task: ``success_rate`` with memory, the no-memory run as the peer.

The lifelong-learning check (RoboMemory) runs too unless ``--no-memory`` or
``--lifelong-layouts 0``: each of K layouts (seeds; default min(N, 5)) of cups,
button_sequence and count is attempted ``--attempts`` times (3) in a row with the
show phase hidden from the camera (the robot does not see the cube being covered, the lights, the
tokens), so the first attempt can only guess; the environment's verdict after an
attempt goes to episodic memory as a terminal plan step (``episode`` succeeded /
failed). Later attempts at the same layout recall which choice failed and avoid
it: success by attempt number shows what was learned.

Reproducibility. The harness clocks the graph in lockstep: the simulator waits
for the planner's chunk at every control step, and the planner is stepped only
when perception, memory and the planner have handled everything published so
far. So a seed gives the same episode, the same percepts and the same decisions.
``engram launch launch/sim_full.yaml`` runs the same nodes free-running.

Nothing needs preparing on a fresh machine: subgoals are executed by the skill
controllers (``planners/skills.py`` says why they, not the action expert, are the
tool for these subgoals), perception uses its default random-weight encoder
(identity and 3D come from the simulator's segmentation, as intended) and memory
the MiniLM text encoder shipped in a PyPI package.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = [
    "EvalConfig",
    "Pipeline",
    "add_arguments",
    "evaluate_tasks",
    "format_table",
    "run",
]

log = logging.getLogger(__name__)

ALL_TASKS = ("cups", "button_sequence", "put_back", "count", "fetch_seen", "where_heard")
LIFELONG_TASKS = ("cups", "button_sequence", "count")


@dataclass
class EvalConfig:
    """Sizes of the evaluation pipeline (defaults: the full run; ``quick()``: tests)."""

    width_px: int = 320  # camera frame width (tabletop: enough pixels for 4 cm objects)
    height_px: int = 240  # camera frame height
    apartment_width_px: int = 192  # camera frame width in the apartment
    apartment_height_px: int = 144  # camera frame height in the apartment
    camera_rate_hz: float = 10.0  # frames per simulated second (tabletop)
    apartment_camera_rate_hz: float = 5.0  # frames per simulated second (apartment)
    perception_model: str = "engram-vit-small"  # open_clip architecture (random weights)
    voxel_size_m: float = 0.005  # perception point downsampling (fine: grasp yaw from points)
    depth_stride_px: int = 1  # back-project every pixel
    min_object_pixels: int = 8  # segments smaller than this are not objects (a far 3 cm cube)
    step_timeout_s: float = 60.0  # one lockstep step may take this long (wall) before failing
    episode_timeout_s: float = 900.0  # one episode may take this long (wall)
    memories: tuple[str, ...] = ()  # memory names to run; () = all default memories
    text_encoder: str = "minilm"  # memory node's query encoder ("" = none)
    attempts: int = 3  # lifelong: attempts per layout

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


# ---------------------------------------------------------------------------------------
# the lockstep pipeline


@dataclass
class Pipeline:
    """Sim -> perception -> memory -> planner on one in-process bus, in lockstep.

    ``memory_node`` may be passed in to keep memory across pipelines (lifelong).
    """

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

    def __post_init__(self) -> None:
        from engram.perception.node import PerceptionConfig, PerceptionNode
        from engram.planners.node import PlannerNode, PlannerNodeConfig
        from engram.planners.skills import ROBOT_LABELS
        from engram.runtime.bus import InProcBus
        from engram.sim.node import SimNode, SimNodeConfig
        from engram.sim.tasks import TASKS

        cfg = self.config
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; known: {', '.join(sorted(TASKS))}")
        apartment = self.task in ("fetch_seen", "where_heard")
        width = cfg.apartment_width_px if apartment else cfg.width_px
        height = cfg.apartment_height_px if apartment else cfg.height_px
        rate = cfg.apartment_camera_rate_hz if apartment else cfg.camera_rate_hz
        self.owns_bus = self.bus is None
        if self.bus is None:
            self.bus = InProcBus(f"eval-{self.task}-{self.seed}")
        self.sim = SimNode(
            SimNodeConfig(
                task=self.task,
                seed=self.seed,
                episodes=self.episodes,
                camera_rate_hz=rate,
                state_rate_hz=10.0,
                width_px=width,
                height_px=height,
                clock="lockstep",
                driver=self.driver if not self.planner else "stop",
                hide_show_frames=self.hide_show,
                heartbeat_hz=0.0,
            ),
            bus=self.bus,
            name="sim",
            pace=self._pace,
            on_episode_end=self._after_episode,
        )
        self.perception = PerceptionNode(
            PerceptionConfig(
                model_name=cfg.perception_model,
                batch_size=1,
                max_queue=8,
                voxel_size_m=cfg.voxel_size_m,
                depth_stride_px=cfg.depth_stride_px,
                audio_enabled=apartment,
                text_encoder="",
                objects={
                    "min_object_pixels": cfg.min_object_pixels,
                    "ignore_labels": tuple(sorted(ROBOT_LABELS)),
                },
                # every frame is perceived (closed-loop control needs fresh objects)
                keyframes={"pixel_change_threshold": 0.0, "min_interval_s": 0.05},
                heartbeat_hz=0.0,
            ),
            bus=self.bus,
            name="perception",
        )
        self.nodes: list[Any] = [self.perception]
        self.owns_memory = False
        if self.use_memory:
            if self.memory_node is None:
                self.memory_node = make_memory_node(cfg, bus=self.bus)
                self.owns_memory = True
            elif self.memory_node.bus is not self.bus:
                raise ValueError("a shared memory node must be on the pipeline's bus")
            self.nodes.append(self.memory_node)
        self.planner_node = None
        if self.planner:
            self.planner_node = PlannerNode(
                PlannerNodeConfig(
                    use_memory=self.use_memory,
                    autotick=False,
                    camera_width_px=width,
                    seed=self.seed,
                    heartbeat_hz=0.0,
                ),
                bus=self.bus,
                name="planner",
            )
            self.nodes.append(self.planner_node)
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
            speech_done = c["transcripts"] + c["transcripts_empty"] + c["speech_dropped"]
            if speech_done < c["speech_segments"] - c.get("audio_errors", 0):
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
            if self.planner_node is not None:
                if self.planner_node.step() is None:
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
            report["planner"] = {
                "status": loop.status,
                "reason": loop.reason,
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


def make_memory_node(config: EvalConfig, *, bus: Any, root: str = "") -> Any:
    """The memory node the evaluation (and ``engram demo``) uses: no periodic
    consolidation (lockstep); ``root``: persist to this directory ("" = in memory)."""
    from engram.memory.node import MemoryNode, MemoryNodeConfig

    return MemoryNode(
        MemoryNodeConfig(
            root=root,
            memories=list(config.memories),
            text_encoder=config.text_encoder,
            consolidate_every_s=0.0,
            heartbeat_hz=0.0,
        ),
        bus=bus,
        name="memory",
    )


# ---------------------------------------------------------------------------------------
# task success


def _chance(task: str) -> float:
    from engram.sim.envs import make

    env = make(task)
    try:
        return float(env.chance_success)
    finally:
        env.close()


def evaluate_tasks(
    tasks: list[str],
    *,
    episodes: int,
    seed: int,
    conditions: tuple[bool, ...] = (True, False),
    config: EvalConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Success per task and condition: ``{"tasks": {task: {"memory": {...},
    "no_memory": {...}, "chance": p}}}``; each condition has success_rate, successes,
    episodes, reports."""
    cfg = config or EvalConfig()
    out: dict[str, Any] = {"tasks": {}, "episodes": episodes, "seed": seed}
    for task in tasks:
        row: dict[str, Any] = {"chance": _chance(task)}
        for use_memory in conditions:
            t0 = time.monotonic()
            reports = []
            for i in range(episodes):
                # a fresh pipeline (and memory) per episode: episodes are independent;
                # learning across attempts is what --lifelong measures
                pipe = Pipeline(task, seed + i, episodes=1, use_memory=use_memory, config=cfg)
                reports += pipe.run()
            ok = sum(1 for r in reports if r["success"])
            name = "memory" if use_memory else "no_memory"
            row[name] = {
                "success_rate": ok / max(1, len(reports)),
                "successes": ok,
                "episodes": len(reports),
                "wall_s": round(time.monotonic() - t0, 1),
                "reports": [_strip(r) for r in reports],
            }
            if progress:
                print(
                    f"  {task:16s} {name:9s} {ok}/{len(reports)} ({time.monotonic() - t0:.0f} s)",
                    file=sys.stderr,
                )
        out["tasks"][task] = row
    return out


def evaluate_lifelong(
    tasks: list[str],
    *,
    layouts: int,
    seed: int,
    config: EvalConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Attempts 1..K at the same layout with the show hidden, memory kept between them:
    ``{task: {"by_attempt": [success rate of attempt k], ...}}``."""
    cfg = config or EvalConfig()
    out: dict[str, Any] = {}
    for task in tasks:
        by_attempt = [0] * cfg.attempts
        details = []
        from engram.runtime.bus import InProcBus

        for layout in range(layouts):
            bus = InProcBus(f"lifelong-{task}-{seed + layout}")
            memory = make_memory_node(cfg, bus=bus)
            memory.start()
            outcomes = []
            for attempt in range(cfg.attempts):
                pipe = Pipeline(
                    task,
                    seed + layout,
                    episodes=1,
                    use_memory=True,
                    hide_show=True,
                    config=cfg,
                    memory_node=memory,
                    bus=bus,
                )
                reports = pipe.run()
                ok = bool(reports and reports[0]["success"])
                outcomes.append(
                    {
                        "success": ok,
                        "decisions": reports[0].get("planner", {}).get("decisions", [])
                        if reports
                        else [],
                    }
                )
                by_attempt[attempt] += int(ok)
            memory.stop()
            bus.close()
            details.append({"seed": seed + layout, "attempts": outcomes})
            if progress:
                marks = "".join("+" if o["success"] else "-" for o in outcomes)
                print(f"  {task:16s} lifelong seed {seed + layout}: {marks}", file=sys.stderr)
        out[task] = {
            "by_attempt": [n / max(1, layouts) for n in by_attempt],
            "layouts": layouts,
            "details": details,
        }
    return out


def _strip(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in ("ground_truth_log", "ground_truth")}


def format_table(result: dict[str, Any], lifelong: dict[str, Any] | None = None) -> str:
    """The markdown table of success rates (and the lifelong table)."""
    lines = [
        "| task | with memory | no memory | chance |",
        "|---|---|---|---|",
    ]
    mem_rates, none_rates = [], []
    for task, row in result["tasks"].items():
        cells = []
        for name, bucket in (("memory", mem_rates), ("no_memory", none_rates)):
            c = row.get(name)
            if c is None:
                cells.append("-")
                continue
            bucket.append(c["success_rate"])
            cells.append(f"{c['success_rate']:.0%} ({c['successes']}/{c['episodes']})")
        lines.append(f"| {task} | {cells[0]} | {cells[1]} | {row['chance']:.0%} |")
    avg = [f"{sum(r) / len(r):.0%}" if r else "-" for r in (mem_rates, none_rates)]
    chance = [row["chance"] for row in result["tasks"].values()]
    lines.append(f"| **average** | **{avg[0]}** | **{avg[1]}** | {sum(chance) / len(chance):.0%} |")
    if lifelong:
        k = max(len(v["by_attempt"]) for v in lifelong.values())
        lines += [
            "",
            "Lifelong (show phase hidden; memory kept between attempts at the same layout):",
            "",
            "| task | " + " | ".join(f"attempt {i + 1}" for i in range(k)) + " |",
            "|---|" + "---|" * k,
        ]
        for task, row in lifelong.items():
            cells = " | ".join(f"{r:.0%}" for r in row["by_attempt"])
            lines.append(f"| {task} | {cells} |")
    return "\n".join(lines)


def bench_json(result: dict[str, Any], lifelong: dict[str, Any] | None = None) -> dict[str, Any]:
    """The BENCH.md envelope: bench "eval", a case per task, success_rate, the
    no-memory run as the peer (when both ran)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from _common import machine_info
    from _common import result as row

    rows = []
    for task, r in result["tasks"].items():
        mem, none = r.get("memory"), r.get("no_memory")
        main = mem or none
        extra = {"episodes": main["episodes"], "chance": round(r["chance"], 4)}
        if mem is not None and none is not None:
            rows.append(
                row(
                    task,
                    "success_rate",
                    mem["success_rate"],
                    "higher",
                    peer="no memory",
                    peer_value=none["success_rate"],
                    **extra,
                )
            )
        else:
            label = task if mem is not None else f"{task} (no memory)"
            rows.append(row(label, "success_rate", main["success_rate"], "higher", **extra))
    for task, r in (lifelong or {}).items():
        rates = r["by_attempt"]
        rows.append(
            row(
                f"{task} lifelong attempt {len(rates)}",
                "success_rate",
                rates[-1],
                "higher",
                peer="attempt 1",
                peer_value=rates[0],
                layouts=r["layouts"],
            )
        )
    return {"bench": "eval", "machine": machine_info(), "results": rows}


# ---------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "what",
        nargs="?",
        default="tasks",
        choices=("tasks", "memory-qa"),
        help="tasks (default): success rates; memory-qa: questions about the past",
    )
    parser.add_argument("--task", default="all", help=f"one of {', '.join(ALL_TASKS)}, or all")
    parser.add_argument(
        "--episodes", type=int, default=10, help="episodes per task (or QA streams)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--no-memory", action="store_true", help="only the no-memory ablation")
    group.add_argument("--memory-only", action="store_true", help="only the run with memory")
    parser.add_argument(
        "--lifelong-layouts",
        type=int,
        default=-1,
        help="lifelong check: layouts attempted repeatedly with the show hidden "
        f"({', '.join(LIFELONG_TASKS)}); default min(episodes, 5), 0 = off",
    )
    parser.add_argument("--attempts", type=int, default=0, help="lifelong: attempts per layout")
    parser.add_argument("--json", default="", help="write the BENCH.md JSON here")
    parser.add_argument("--quick", action="store_true", help="small models and frames (fast)")


def run(args: argparse.Namespace) -> int:
    logging.getLogger("memory").setLevel(logging.ERROR)
    cfg = EvalConfig.quick() if args.quick else EvalConfig()
    if args.attempts:
        cfg = replace(cfg, attempts=args.attempts)
    if args.episodes < 1:
        print("engram eval: --episodes must be >= 1", file=sys.stderr)
        return 2
    if args.what == "memory-qa":
        from engram.planners.memory_qa import run_memory_qa

        return run_memory_qa(
            episodes=args.episodes, seed=args.seed, json_path=args.json, config=cfg
        )
    tasks = list(ALL_TASKS) if args.task == "all" else [args.task]
    unknown = [t for t in tasks if t not in ALL_TASKS]
    if unknown:
        print(
            f"engram eval: unknown task {unknown[0]!r}; known: {', '.join(ALL_TASKS)}, all",
            file=sys.stderr,
        )
        return 2
    conditions = (False,) if args.no_memory else (True,) if args.memory_only else (True, False)
    print(
        f"engram eval: {', '.join(tasks)}, {args.episodes} episodes from seed {args.seed}",
        file=sys.stderr,
    )
    result = evaluate_tasks(
        tasks, episodes=args.episodes, seed=args.seed, conditions=conditions, config=cfg
    )
    lifelong = None
    layouts = min(args.episodes, 5) if args.lifelong_layouts < 0 else args.lifelong_layouts
    chosen = [t for t in tasks if t in LIFELONG_TASKS]
    if layouts > 0 and chosen and not args.no_memory:
        lifelong = evaluate_lifelong(chosen, layouts=layouts, seed=args.seed, config=cfg)
    print(format_table(result, lifelong))
    if args.json:
        doc = bench_json(result, lifelong)
        doc["details"] = {"tasks": result["tasks"], "lifelong": lifelong}
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
