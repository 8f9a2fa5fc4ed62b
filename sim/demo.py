"""One task episode through the bus: the main job's simulation part.

``run_demo(task, seed, out_dir=...)`` starts a ``SimNode`` (lock-step clock,
driven by the scripted expert unless another node sends ``ActionChunk``s on
``/actions``) on an in-process bus, plus any ``extra_nodes`` (perception,
memory, a controller ...), collects what the sim publishes and writes to
``out_dir``:

- ``report.json``: the report returned (success, counts, paths),
- ``ground_truth/<task>_<seed>.json``: the episode's ground-truth log,
- ``frames/frame_<n>.png``: every ``keyframe_every``-th published frame (RGB),
- ``audio.wav``: the scene audio the robot heard (tasks with audio).

``extra_nodes`` items are ``Node`` instances already on ``bus`` (pass the same
``bus``) or callables ``f(bus) -> Node``; they are started before the sim and
stopped after it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from engram.runtime.bus import Bus, BusClosed, InProcBus
from engram.runtime.node import Node
from engram.sim._io import write_png, write_wav
from engram.sim.node import SimNode, SimNodeConfig

__all__ = ["run_demo"]


def _collect(sub, stop: threading.Event, fn: Callable[[Any], None]) -> None:
    while not stop.is_set() or len(sub.mailbox):
        try:
            msg = sub.get(0.05)
        except BusClosed:
            return
        if msg is not None:
            fn(msg)


def run_demo(
    task: str = "cups",
    seed: int = 0,
    *,
    out_dir: str | Path,
    progress: bool = True,
    extra_nodes: Iterable[Node | Callable[[Bus], Node]] = (),
    bus: Bus | None = None,
    width_px: int = 320,
    height_px: int = 240,
    camera_rate_hz: float = 10.0,
    keyframe_every: int = 10,
    timeout_s: float = 900.0,
    **sim_options: Any,
) -> dict[str, Any]:
    """Run one episode of ``task`` through the bus; returns the report (also in report.json).

    ``sim_options`` are further ``SimNodeConfig`` fields (e.g. ``driver="actions"``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    own_bus = bus is None
    bus = bus if bus is not None else InProcBus(f"demo-{task}-{seed}")
    config = SimNodeConfig(
        task=task,
        seed=seed,
        episodes=1,
        clock="lockstep",
        width_px=width_px,
        height_px=height_px,
        camera_rate_hz=camera_rate_hz,
        ground_truth_dir=str(out / "ground_truth"),
        **sim_options,
    )
    sim = SimNode(config, bus=bus, name="sim")
    counts = {"frames": 0, "robot_state": 0, "audio": 0, "instruction": 0}
    instructions: list[str] = []
    audio: list[np.ndarray] = []
    keyframes: list[str] = []

    def on_frame(msg) -> None:
        if counts["frames"] % max(1, keyframe_every) == 0:
            keyframes.append(
                str(write_png(out / "frames" / f"frame_{counts['frames']:05d}.png", msg.rgb))
            )
        counts["frames"] += 1

    def on_state(msg) -> None:
        counts["robot_state"] += 1

    def on_audio(msg) -> None:
        counts["audio"] += 1
        audio.append(msg.pcm[:, 0].copy())

    def on_instruction(msg) -> None:
        counts["instruction"] += 1
        instructions.append(msg.text)

    stop = threading.Event()
    collectors = []
    for topic, fn in (
        (sim.topic("frames"), on_frame),
        (sim.topic("robot_state"), on_state),
        (sim.topic("audio"), on_audio),
        (sim.topic("instruction"), on_instruction),
    ):
        sub = bus.subscribe(topic, "all(64)")  # backpressure: count every message
        t = threading.Thread(target=_collect, args=(sub, stop, fn), daemon=True)
        collectors.append((sub, t))
        t.start()

    nodes = [n if isinstance(n, Node) else n(bus) for n in extra_nodes]
    for n in nodes:
        n.start()
    t0 = time.monotonic()
    bar = None
    try:
        sim.start()
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=None, desc=f"{task} seed {seed}", unit="step")
        while not sim.wait(0.2):
            if bar is not None:
                if bar.total is None and sim.env is not None:
                    bar.total = sim.env.max_steps
                bar.n = int(sim.status().get("step", 0))
                bar.set_postfix(phase=sim.status().get("phase", ""), refresh=False)
                bar.refresh()
            if time.monotonic() - t0 > timeout_s:
                break
    finally:
        sim.stop()
        stop.set()
        for sub, t in collectors:
            t.join(timeout=5.0)
            sub.close()
        for n in reversed(nodes):
            n.stop()
        if bar is not None:
            bar.n = int(sim.status().get("step", 0))
            bar.close()
        if own_bus:
            bus.close()
    episode = sim.reports[0] if sim.reports else {}
    wav = ""
    if audio:
        wav = str(write_wav(out / "audio.wav", np.concatenate(audio), 16000))
    report = {
        "task": task,
        "seed": seed,
        "success": bool(episode.get("success", False)),
        "completed": bool(episode),
        "error": sim.error or ("" if episode else f"episode did not finish within {timeout_s} s"),
        "steps": episode.get("steps", 0),
        "sim_time_s": episode.get("sim_time_s", 0.0),
        "wall_time_s": round(time.monotonic() - t0, 2),
        "decision_time_s": episode.get("decision_time_s"),
        "instructions": instructions,
        "published": counts,
        "out_dir": str(out),
        "ground_truth": episode.get("ground_truth", ""),
        "keyframes": keyframes,
        "audio_wav": wav,
        "extra_nodes": [n.name for n in nodes],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    report["report"] = str(out / "report.json")
    return report
