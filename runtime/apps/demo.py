"""``engram demo``: the main job.

By default: one MuJoCo episode of a memory-dependent task (``--task``, default
``cups``) through the full pipeline on one bus — sim node (RGB-D + segmentation
frames, robot state, audio, instruction) -> perception -> memory (spatial,
temporal, episodic, semantic, working; persisted on disk under ``--out``) ->
planner (plan, act, critic, replan) -> actions back to the simulator. A progress
bar counts control steps; the report says whether the task succeeded, what the
planner asked memory and decided, how much each memory holds, and where the
outputs are (``report.json``, the memory store, the episode's ground truth).

``--synthetic`` runs the small synthetic graph instead (``launch/demo.yaml``: a
synthetic camera streaming frames to a statistics node; ``--multiprocess`` puts
the camera in its own supervised process with frames over ZeroMQ) and reports
frames sent and received, drops and latency.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from pathlib import Path
from typing import Any

from engram.planners.policies.diffusion.checkpoint import DEFAULT_CHECKPOINT

__all__ = [
    "SYNTHETIC_GRAPH",
    "SYNTHETIC_MULTIPROCESS_GRAPH",
    "add_arguments",
    "run",
    "run_synthetic",
]

_LAUNCH_DIR = Path(__file__).resolve().parents[2] / "launch"
SYNTHETIC_GRAPH = _LAUNCH_DIR / "demo.yaml"
SYNTHETIC_MULTIPROCESS_GRAPH = _LAUNCH_DIR / "demo_multiprocess.yaml"


def add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--task",
        default="cups",
        help="simulation task: cups, button_sequence, put_back, count, fetch_seen, "
        "where_heard, spoken_keys (all: engram sim list)",
    )
    parser.add_argument("--seed", type=int, default=0, help="layout seed of the episode")
    parser.add_argument(
        "--out", default="runs/demo", help="output directory (report, memory store, ground truth)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller frames and a tiny encoder (faster)"
    )
    parser.add_argument(
        "--synthetic", action="store_true", help="run the synthetic camera graph (no simulator)"
    )
    parser.add_argument(
        "--multiprocess", action="store_true", help="synthetic graph across OS processes (ZeroMQ)"
    )
    parser.add_argument(
        "--graph", default=None, help="another graph with a 'camera' and a 'stats' node"
    )
    parser.add_argument("--duration-s", type=float, default=5.0, help="how long to stream")
    parser.add_argument(
        "--executor",
        choices=("skills", "expert"),
        default="skills",
        help="who moves the robot: the planner's skill controllers or the learned "
        "diffusion action expert (the shipped checkpoint; the policy node)",
    )
    parser.add_argument(
        "--mode",
        choices=("planner", "end_to_end"),
        default="planner",
        help="with --executor expert: execute the planner's subgoals, or end to end",
    )
    parser.add_argument(
        "--checkpoint",
        default=DEFAULT_CHECKPOINT,
        help=f"with --executor expert: a shipped checkpoint's name (default {DEFAULT_CHECKPOINT}; "
        "also tabletop, tabletop_goal) or a checkpoint from `engram train`",
    )
    parser.add_argument(
        "--perception",
        choices=("ground_truth", "camera"),
        default="ground_truth",
        help="ground_truth: the simulator's segmentation names objects; camera: RGB-D and "
        "pose only, perception finds and names objects (the sim-trained encoder)",
    )
    parser.add_argument(
        "--whisper-model",
        default="tiny.en",
        help="speech model: a name (tiny.en, base.en, ...), a CTranslate2 folder or a .pt file",
    )
    from engram.runtime.bridges.rerun import add_rerun_argument

    add_rerun_argument(parser)


def run(args: Any) -> int:
    if args.synthetic or args.multiprocess or args.graph:
        graph = args.graph or (
            SYNTHETIC_MULTIPROCESS_GRAPH if args.multiprocess else SYNTHETIC_GRAPH
        )
        return run_synthetic(graph, duration_s=args.duration_s, rerun=getattr(args, "rerun", None))
    from engram.runtime.apps.live import check_whisper_model

    whisper_model = getattr(args, "whisper_model", "tiny.en")
    if check_whisper_model(whisper_model, command="engram demo"):
        return 2
    if getattr(args, "executor", "skills") == "expert":
        from engram.planners.policies.diffusion.checkpoint import check_expert_task

        try:  # a missing or mismatched checkpoint is refused before anything starts
            check_expert_task(args.checkpoint, args.task)
        except (FileNotFoundError, ValueError) as exc:
            print(f"engram demo: {exc}", file=sys.stderr)
            return 2
    report = run_sim(
        task=args.task,
        seed=args.seed,
        out_dir=args.out,
        quick=args.quick,
        rerun=getattr(args, "rerun", None),
        whisper_model=whisper_model,
        executor=getattr(args, "executor", "skills"),
        mode=getattr(args, "mode", "planner"),
        perception=getattr(args, "perception", "ground_truth"),
        checkpoint=getattr(args, "checkpoint", DEFAULT_CHECKPOINT),
    )
    return 0 if report.get("ran") else 1


def run_sim(
    *,
    task: str = "cups",
    seed: int = 0,
    out_dir: str | Path = "runs/demo",
    quick: bool = False,
    rerun: str | None = None,
    progress: bool = True,
    whisper_model: str = "tiny.en",
    executor: str = "skills",
    mode: str = "planner",
    perception: str = "ground_truth",
    checkpoint: str = DEFAULT_CHECKPOINT,
) -> dict[str, Any]:
    """One MuJoCo episode through sim -> perception -> memory -> planner; prints and
    returns the report (also written to ``<out_dir>/report.json``)."""
    import json

    from tqdm import tqdm

    from engram.planners.evaluation.pipeline import EvalConfig, Pipeline, make_memory_node
    from engram.runtime.bus import InProcBus

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = EvalConfig.quick() if quick else EvalConfig()
    config = dataclasses.replace(config, perception=perception)
    bus = InProcBus(f"demo-{task}-{seed}")
    memory = make_memory_node(config, bus=bus, root=str(out / "memory"))
    report: dict[str, Any] = {
        "task": task,
        "seed": seed,
        "ran": False,
        "out_dir": str(out),
        "executor": executor,
        "mode": mode if executor == "expert" else "planner",
        "checkpoint": checkpoint if executor == "expert" else None,
    }
    chain = "sim -> perception -> memory -> planner"
    if executor == "expert":  # end to end: no planner, the expert's own bank (memory records)
        chain = "sim -> perception -> policy" if mode == "end_to_end" else f"{chain} -> policy"
    print(f"engram demo: MuJoCo task {task!r}, seed {seed}: {chain}", file=sys.stderr)
    try:
        pipeline = Pipeline(
            task=task,
            seed=seed,
            episodes=1,
            config=config,
            bus=bus,
            memory_node=memory,
            executor=executor,
            mode=mode,
            checkpoint=checkpoint,
        )
        pipeline.sim.config.ground_truth_dir = str(out / "ground_truth")
        pipeline.perception.config.whisper_model = whisper_model  # before it configures
        memory.start()
        extra = []
        if rerun is not None:
            from engram.runtime.bridges.rerun import start_rerun_node

            node = start_rerun_node(rerun, bus, name="engram-demo")  # all ports: robot too
            extra.append(node)
        stop = threading.Event()

        def show_progress() -> None:
            if not (progress and sys.stderr.isatty()):
                return  # piped or redirected: no bar, no carriage returns
            with tqdm(
                desc="engram demo: loading models", unit="step", file=sys.stderr, leave=False
            ) as bar:
                done = 0
                while not stop.wait(0.2):
                    env = getattr(pipeline.sim, "env", None)
                    if env is not None and bar.total is None:  # models loaded, episode on
                        bar.total = getattr(env, "max_steps", None)
                        bar.set_description("engram demo: episode (max steps)")
                    bar.update(pipeline.steps - done)
                    done = pipeline.steps

        ticker = threading.Thread(target=show_progress, daemon=True)
        ticker.start()
        t0 = time.monotonic()
        try:
            episodes = pipeline.run()
        finally:
            stop.set()
            ticker.join(1.0)
            for node in extra:
                logger = getattr(node, "logger", None)
                if logger is not None and memory.state == "running":
                    # places and the recall of the instruction: request/reply traffic the
                    # Rerun node cannot see
                    from engram.runtime.bridges.rerun import log_memory_snapshot

                    done = pipeline.reports[0] if pipeline.reports else {}
                    log_memory_snapshot(logger, bus, question=done.get("instruction", ""))
                node.stop()
        episode = episodes[0] if episodes else {}
        report["models"] = model_summary(pipeline.perception)
        report.update(
            ran=bool(episodes),
            success=bool(episode.get("success")),
            wall_s=round(time.monotonic() - t0, 1),
            control_steps=pipeline.steps,
            episode=episode,
            memory={m.name: len(m) for m in memory.system.memories},
        )
    finally:
        if memory.state == "running":
            memory.stop()
        bus.close()
    report["outputs"] = {
        "report": str(out / "report.json"),
        "memory_store": str(out / "memory"),
        "ground_truth": str(out / "ground_truth"),
    }
    from engram.planners.evaluation.report import round_floats  # no 1.6000000000000012

    report = round_floats(json.loads(json.dumps(report, default=str)))
    (out / "report.json").write_text(json.dumps(report, indent=2))
    _print_sim_report(report)
    return report


RANDOM_WEIGHTS_NOTE = "RANDOM WEIGHTS - object labels and similarities are meaningless"


def model_summary(perception: Any) -> list[str]:
    """One line per model the perception node loaded, naming its source; a model with
    random weights says so (its labels are meaningless)."""
    if perception is None:
        return []
    cfg = perception.config
    weights = getattr(getattr(perception, "encoder", None), "weights_path", None)
    source = weights or getattr(cfg, "checkpoint_path", None) or getattr(cfg, "pretrained", None)
    name = getattr(perception, "encoder_name", None) or getattr(cfg, "model_name", "?")
    if source:
        lines = [f"image encoder {name} ({source})"]
    else:
        lines = [f"image encoder {name}: {RANDOM_WEIGHTS_NOTE}"]
    speech = getattr(perception, "speech", None)
    if speech is not None:
        lines.append(f"speech {speech.recognizer.describe()}")
    return lines


def _print_sim_report(report: dict[str, Any]) -> None:
    episode = report.get("episode", {})
    planner = episode.get("planner", {})
    print(f"engram demo: task {report['task']} seed {report['seed']}")
    print(f"  instruction   {episode.get('instruction', '')}")
    print(
        f"  success       {'yes' if report.get('success') else 'no'}"
        f"  ({report.get('control_steps', 0)} control steps, {report.get('wall_s', 0)} s)"
    )
    for decision in planner.get("decisions", [])[:6]:
        print(
            f"  memory        {decision['question']} -> {decision['answer']} ({decision['source']})"
        )
    if planner and planner.get("reason"):
        print(f"  planner       {planner.get('status')}: {planner['reason']}")
    sizes = ", ".join(f"{k} {v}" for k, v in report.get("memory", {}).items())
    print(f"  memories      {sizes}")
    for line in report.get("models", []):
        print(f"  model         {line}")
    for name, path in report["outputs"].items():
        print(f"  {name:<13} {path}")


def run_synthetic(
    graph: str | Path = SYNTHETIC_GRAPH,
    *,
    duration_s: float = 5.0,
    camera: str = "camera",
    stats: str = "stats",
    rerun: str | None = None,
) -> int:
    """Stream ``duration_s`` worth of frames from ``camera`` to ``stats`` and print a report.

    ``rerun``: a ``--rerun`` value (``"FILE.rrd"``, ``""`` = a viewer) adds a Rerun node
    logging the camera's frames. Returns 0 when frames arrived, 1 when none did, 2 for
    an unusable graph.
    """
    import yaml
    from tqdm import tqdm

    from engram.runtime.demo_nodes import SyntheticCameraConfig
    from engram.runtime.launcher import GraphError, Launch

    try:
        data = yaml.safe_load(Path(graph).read_text(encoding="utf-8"))
        cam_spec = next(n for n in data["nodes"] if n.get("name") == camera)
        params = cam_spec.setdefault("params", {})
        rate_hz = float(params.get("rate_hz", SyntheticCameraConfig.rate_hz))
        params["max_frames"] = expected = max(1, round(rate_hz * duration_s))
        if rerun is not None:
            data["nodes"].append(_rerun_spec(rerun, cam_spec))
        launch = Launch(data, source=str(graph), status=None)
        launch.start()
    except (OSError, yaml.YAMLError, KeyError, TypeError, StopIteration, GraphError) as exc:
        print(f"engram demo: cannot run {graph}: {exc!r}", file=sys.stderr)
        return 2
    beats = _Heartbeats(launch)
    t0 = time.monotonic()
    try:
        with tqdm(
            total=expected,
            desc="engram demo",
            unit="frame",
            file=sys.stderr,
            leave=False,
            disable=not sys.stderr.isatty(),  # piped: no carriage-return noise
        ) as bar:
            deadline = t0 + duration_s + 5.0  # slack for start-up and the last frames
            received = 0
            while time.monotonic() < deadline:
                hb = beats.latest(stats)
                now_received = hb.counters.get("frames", 0) if hb else 0
                bar.update(now_received - received)
                received = now_received
                if received >= expected:
                    break
                if _camera_done(launch, camera) and time.monotonic() > t0 + duration_s + 1.0:
                    break  # the camera finished; what has not arrived by now is lost
                time.sleep(0.1)
        elapsed = time.monotonic() - t0
        settle = time.monotonic() + 2.0  # let the camera finish and report
        while not _camera_done(launch, camera) and time.monotonic() < settle:
            time.sleep(0.05)
        stats_hb = beats.latest(stats)
        cam_hb = beats.latest(camera)
    finally:
        beats.close()
        launch.stop()
    sent = _frames_sent(launch, camera, cam_hb, expected)
    counters = stats_hb.counters if stats_hb else {}
    received = counters.get("frames", 0)
    dropped, gaps = counters.get("dropped", 0), counters.get("seq_gaps", 0)
    latency = stats_hb.latency_ms if stats_hb else {}
    where = "threads of one process" if not launch.groups else "several processes (ZeroMQ)"
    print(f"engram demo (synthetic): {graph}, {where}, bus {launch.url}")
    print(f"  frames sent      {sent} at {rate_hz:g} Hz, done in {elapsed:.1f} s")
    print(f"  frames received  {received}")
    print(f"  lost             {max(sent - received, 0)} (queue drops {dropped}, seq gaps {gaps})")
    if latency:
        print(
            f"  latency          p50 {latency.get('p50', 0):.2f} ms, "
            f"p95 {latency.get('p95', 0):.2f} ms, max {latency.get('max', 0):.2f} ms"
        )
    return 0 if received > 0 else 1


class _Heartbeats:
    """The latest heartbeat per node: asked directly of in-process nodes, else from the bus."""

    def __init__(self, launch: Any) -> None:
        from engram.runtime.node import HEARTBEAT_TOPIC

        self._launch = launch
        self._last: dict[str, Any] = {}
        self._sub = launch.bus.subscribe(HEARTBEAT_TOPIC, "queue(64)")
        self._thread = threading.Thread(target=self._run, daemon=True, name="demo:heartbeats")
        self._thread.start()

    def _run(self) -> None:
        from engram.runtime.bus import BusClosed

        while True:
            try:
                hb = self._sub.get(0.1)
            except BusClosed:
                return
            if hb is not None:
                self._last[hb.node] = hb

    def latest(self, name: str) -> Any:
        node = self._launch.nodes.get(name)
        if node is not None:
            return node.heartbeat()
        return self._last.get(name)

    def close(self) -> None:
        self._sub.close()
        self._thread.join(1.0)


def _rerun_spec(flag: str, cam_spec: dict[str, Any]) -> dict[str, Any]:
    """A launch-graph node logging the camera's frames to Rerun (``--rerun``)."""
    from engram.runtime.bridges.rerun import rerun_config

    cfg = rerun_config(flag, name="engram-demo", ports=["frames"])
    frames = (cam_spec.get("topics") or {}).get("frames", "/frames")
    params = {"save_path": cfg.save_path, "spawn": cfg.spawn, "ports": ["frames"]}
    return {"name": "rerun", "type": "rerun", "params": params, "topics": {"frames": frames}}


def _camera_done(launch: Any, camera: str) -> bool:
    node = launch.nodes.get(camera)
    if node is not None:
        return node.state == "stopped"
    info = launch.status().get(camera, {})
    return info.get("state") in ("exited", "failed", "stopped")


def _frames_sent(launch: Any, camera: str, cam_hb: Any, expected: int) -> int:
    node = launch.nodes.get(camera)
    if node is not None:
        return int(node.frames_sent)
    info = launch.status().get(camera, {})
    if info.get("state") == "exited" and info.get("last_exit") == "exited with code 0":
        return expected  # it sent all its frames and stopped by itself
    return int(cam_hb.counters.get("frames", 0)) if cam_hb else 0
