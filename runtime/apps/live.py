"""``engram live``: a webcam (or video file / URL) and a microphone (or WAV file) streamed
through perception into memory in real time, with a web page to watch and ask.

The graph is ``launch/live.yaml``, loaded with the command's flags as overrides
(``--mic none`` drops the microphone; ``--mic browser`` replaces it with the page's own
microphone, streamed by its talk button to the web node, which publishes ``/audio``; the
rerun node is dropped unless ``--rerun``); its
nodes run in one process on an in-process bus::

    camera (CameraSource) ──/frames──▶ perception ──/percepts, /transcripts, /sound_events──▶ memory
    microphone (MicrophoneSource) ──/audio──▶ ┘                       │                      ▲
                                                                      ▼                      │ /memory/query
                                                      web (LiveHub) + FastAPI page ──────────┘
                                                      rerun (RerunNode, with --rerun)

Start-up order: the sources open first (a missing camera or microphone fails at
once with a message listing what is available), then the page is served (a taken
port fails here), then the models load (pretrained weights from the local cache; a
missing file gives the download command), then the nodes start (consumers before
producers).

Models: by default the real ones, ``ViT-B-32`` / ``laion2b_s34b_b79k`` (open_clip)
and whisper ``tiny.en`` (faster-whisper), loaded offline from their caches. ``--random-weights``
runs the same pipeline with tiny random models (nothing to download; the text
and labels are meaningless, the plumbing is real).

The memory answers questions in the CLIP space too: the memory node's embedders
reuse perception's loaded encoders (MiniLM for "text", the CLIP text tower for
"image"), so nothing is loaded twice.

Python API::

    with LiveDemo(LiveConfig(camera="clip.avi", mic="speech.wav", port=0)) as demo:
        print(demo.url)            # the page
        demo.hub.ask("where did I leave the mug?")
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engram.runtime.bridges.rerun import add_rerun_argument, rerun_config
from engram.runtime.bus import InProcBus
from engram.runtime.drivers.base import SourceError
from engram.runtime.drivers.camera import CameraSource
from engram.runtime.drivers.microphone import MicrophoneSource
from engram.runtime.launcher import build_nodes, load_graph, start_order
from engram.runtime.node import Node

__all__ = ["LiveConfig", "LiveDemo", "add_arguments", "run"]

log = logging.getLogger(__name__)

_NO_MIC = ("", "none", "off", "no")
BROWSER_MIC = "browser"  # --mic browser: the page's microphone (getUserMedia -> /ws/audio)


RANDOM_WEIGHTS_NOTE = "random weights: object labels and similarities are meaningless"


@dataclass
class LiveConfig:
    """Settings of ``LiveDemo`` (the ``engram live`` options)."""

    camera: str = "0"  # camera index, video file or stream URL
    mic: str = "default"  # "default", a device index / name, an audio file, "browser" or "none"
    host: str = "127.0.0.1"  # address the page is served on
    port: int = 8000  # port of the page; 0 = any free port
    rerun: str | None = (
        None  # None = no Rerun; "" = a viewer (or a .rrd when headless); a .rrd path
    )
    random_weights: bool = False  # tiny random models instead of pretrained weights
    clip_model: str = ""  # open_clip architecture; "" = ViT-B-32 (engram-vit-small when random)
    clip_pretrained: str = "laion2b_s34b_b79k"  # open_clip weights tag (ignored when random)
    clip_cache_dir: str | None = None  # where the open_clip weights are; None = default caches
    whisper_model: str = "tiny.en"  # a name (tiny.en, base.en, ...), a CTranslate2 folder or .pt
    whisper_cache_dir: str = "~/.cache/whisper"  # an extra folder searched for a named model
    language: str = "en"  # spoken language ("" = detect)
    device: str = "auto"  # torch device for the models: auto, cpu, cuda
    max_width_px: int = 640  # wider frames are scaled down to this width; 0 = as captured
    rate_hz: float = 0.0  # camera frames per second at most; 0 = the source's rate
    loop: bool = False  # video / audio files start over at their end
    memory_root: str = ""  # persist the memory here ("" = in memory only)
    thumbnail_width_px: int = 160  # keyframe thumbnails (timeline, recalls), pixels
    perception: dict[str, Any] = field(default_factory=dict)  # more PerceptionConfig fields
    graph: str = "live"  # the launch graph: a name in launch/ or a YAML path


class LiveDemo:
    """The live graph plus the web page; see the module docstring.

    ``start()`` raises ``SourceError`` (camera / microphone), ``FileNotFoundError``
    (model weights) or ``OSError`` (port taken) with a message that says what to do;
    nothing is left running when it does.
    """

    def __init__(self, config: LiveConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = LiveConfig(**overrides)
        elif overrides:
            raise TypeError("LiveDemo: pass a LiveConfig or keyword settings, not both")
        self.config = config
        self.bus = InProcBus(f"live-{id(self):x}")
        self.nodes: dict[str, Node] = {}
        self.camera: CameraSource | None = None
        self.microphone: MicrophoneSource | None = None
        self.hub: Any = None
        self.server: Any = None
        #: called with the page's URL as soon as it is served (before the models load)
        self.on_serving: Callable[[str], None] | None = None
        self._started: list[Node] = []

    @property
    def url(self) -> str:
        return self.server.url if self.server is not None else ""

    # ---- building ---------------------------------------------------------------------
    def graph(self) -> dict[str, Any]:
        """The launch graph's data with this config's overrides."""
        cfg = self.config
        random = cfg.random_weights
        perception: dict[str, Any] = {
            "model_name": cfg.clip_model or ("engram-vit-small" if random else "ViT-B-32"),
            "pretrained": None if random else (cfg.clip_pretrained or None),
            "cache_dir": cfg.clip_cache_dir,
            "whisper_model": cfg.whisper_model,  # real tiny.en even with random_weights
            "whisper_cache_dir": cfg.whisper_cache_dir,
            "language": cfg.language,
            "device": cfg.device,
            "audio_enabled": self._has_mic(),
            "thumbnail_width_px": cfg.thumbnail_width_px,
            **cfg.perception,
        }
        params: dict[str, dict[str, Any]] = {
            "camera": {
                "device": str(cfg.camera),
                "rate_hz": cfg.rate_hz,
                "max_width_px": cfg.max_width_px,
                "loop": cfg.loop,
            },
            "perception": perception,
            "memory": {"root": cfg.memory_root},
            "web": {"model_warning": RANDOM_WEIGHTS_NOTE if random else ""},
        }
        drop = []
        if self._browser_mic():  # the page publishes the audio on /audio (web node)
            params["web"]["browser_mic_topic"] = "/audio"
            drop.append("microphone")
        elif self._has_mic():
            params["microphone"] = {"device": str(cfg.mic), "loop": cfg.loop}
        else:
            drop.append("microphone")
        rerun = rerun_config(
            cfg.rerun,
            name="engram-live",
            ports=["frames", "percepts", "recall", "transcripts", "heartbeat"],
        )
        if rerun is None:
            drop.append("rerun")
        else:
            params["rerun"] = dataclasses.asdict(rerun)
        graph = load_graph(cfg.graph, params=params, drop=drop)
        if "microphone" in drop:  # perception's audio input stays idle
            graph.setdefault("external_topics", {}).setdefault("/audio", "AudioChunk")
        return graph

    def _has_mic(self) -> bool:
        return str(self.config.mic).strip().lower() not in _NO_MIC

    def _browser_mic(self) -> bool:
        return str(self.config.mic).strip().lower() == BROWSER_MIC

    def _embedders(self, perception: Any) -> Any:
        """The memory's embedding spaces, reusing perception's loaded encoders."""
        from engram.memory.embedding import Embedders, load_text_encoder

        encoders: dict[str, Any] = {"text": perception.text_encoder or load_text_encoder("minilm")}
        image_enc = perception.encoder
        if image_enc is not None and "text" in image_enc.modalities:
            encoders["image"] = image_enc  # CLIP's text tower: questions in image space
        return Embedders(encoders)

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        cfg = self.config
        nodes = build_nodes(self.graph(), self.bus, source=str(cfg.graph))
        # 1. sources: fail fast, before any model loads
        self.camera = nodes["camera"]
        self.camera.configure()
        self.microphone = nodes.get("microphone")
        if self.microphone is not None:
            self.microphone.configure()
        # 2. the page, served at once (and a taken port reported before the models load)
        from engram.runtime.apps.web import WebServer, make_app

        self.hub = nodes["web"]
        self.server = WebServer(make_app(self.hub), host=cfg.host, port=cfg.port)
        self.server.start()
        self.hub.start()
        self._started.append(self.hub)
        if self.on_serving is not None:
            self.on_serving(self.server.url)
        # 3. models; the memory embeds questions with perception's encoders
        perception = nodes["perception"]
        perception.configure()
        memory = nodes["memory"]
        memory.embedders = self._embedders(perception)
        for node in nodes.values():
            node.configure()  # the memory, rerun (the others already are)
        # 4. run: consumers first, then the sources
        self.nodes = nodes
        for node in start_order([n for n in nodes.values() if n is not self.hub]):
            node.start()
            self._started.append(node)

    def stop(self) -> None:
        """Stop the sources first (so perception can flush), then the rest, then the page."""
        for node in reversed(self._started):
            try:
                node.stop()
            except Exception:  # noqa: BLE001 - stop the others regardless
                log.exception("live: error stopping %s", node.name)
        self._started.clear()
        if self.server is not None:
            self.server.stop()
        for src in (self.camera, self.microphone):  # configured but never started
            if src is not None and src.state == "configured":
                src.on_stop()
        self.bus.close()

    def sources_finished(self) -> bool:
        """True when every source is a file that has ended (and does not loop)."""
        srcs = [s for s in (self.camera, self.microphone) if s is not None]
        return all(s.kind == "file" and s.finished.is_set() for s in srcs)

    def summary(self) -> str:
        hub = self.hub
        if hub is None:
            return ""
        s = hub.stats()
        return (
            f"frames {s['frames']}, percepts {s['percepts']} (keyframes {s['keyframes']}), "
            f"transcripts {s['transcripts']}, sound events {s['sound_events']}, "
            f"questions {s['questions']}, dropped {s['dropped']}, errors {s['errors']}"
        )

    def __enter__(self) -> LiveDemo:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------
# CLI: engram live


def add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--camera", default="0", help="camera index (0), a video file, or a stream URL"
    )
    parser.add_argument(
        "--mic",
        default="default",
        help="microphone: 'default', a device index or name, a WAV file, 'browser' (the web "
        "page's microphone: its talk button) or 'none'",
    )
    parser.add_argument("--port", type=int, default=8000, help="port of the web page (0 = any)")
    parser.add_argument("--host", default="127.0.0.1", help="address of the web page")
    add_rerun_argument(parser)
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="tiny random models instead of pretrained weights (nothing to download)",
    )
    parser.add_argument("--clip-model", default="", help="open_clip architecture (ViT-B-32)")
    parser.add_argument("--clip-pretrained", default="laion2b_s34b_b79k", help="open_clip tag")
    parser.add_argument("--clip-cache-dir", default=None, help="where the open_clip weights are")
    parser.add_argument(
        "--whisper-model",
        default="tiny.en",
        help="speech model: a name (tiny.en, base.en, ...), a CTranslate2 folder or a .pt file",
    )
    parser.add_argument(
        "--whisper-cache-dir", default="~/.cache/whisper", help="extra folder for named models"
    )
    parser.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda")
    parser.add_argument(
        "--max-width-px", type=int, default=640, help="scale wider frames down to this width"
    )
    parser.add_argument("--rate-hz", type=float, default=0.0, help="camera rate cap (0 = source)")
    parser.add_argument("--loop", action="store_true", help="video / WAV files start over")
    parser.add_argument("--memory-root", default="", help="persist the memory in this directory")
    parser.add_argument(
        "--duration-s", type=float, default=0.0, help="stop after this long (0 = until Ctrl-C)"
    )


def check_whisper_model(model: str, cache_dir: str = "", command: str = "engram") -> int:
    """0 when the speech model ``model`` is found in a format Engram loads; else the reason
    on stderr and 2 (before any source opens or model loads)."""
    from engram.perception.speech.recognizers import (
        RecognizerConfig,
        WhisperModelError,
        resolve_model,
    )

    try:
        resolve_model(RecognizerConfig(model=model, cache_dir=cache_dir))
    except WhisperModelError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 2
    return 0


def run(args: Any) -> int:
    if str(args.mic).strip().lower() not in _NO_MIC and check_whisper_model(
        args.whisper_model, args.whisper_cache_dir, "engram live"
    ):
        return 2
    config = LiveConfig(
        camera=args.camera,
        mic=args.mic,
        host=args.host,
        port=args.port,
        rerun=args.rerun,
        random_weights=args.random_weights,
        clip_model=args.clip_model,
        clip_pretrained=args.clip_pretrained,
        clip_cache_dir=args.clip_cache_dir,
        whisper_model=args.whisper_model,
        whisper_cache_dir=args.whisper_cache_dir,
        device=args.device,
        max_width_px=args.max_width_px,
        rate_hz=args.rate_hz,
        loop=args.loop,
        memory_root=args.memory_root,
    )
    demo = LiveDemo(config)

    def serving(url: str) -> None:
        print(f"engram live: {url}  (loading the models…)", flush=True)
        if not args.no_browser:
            try:
                import webbrowser

                webbrowser.open(url)
            except Exception:  # noqa: BLE001 - a browser is a convenience
                log.info("could not open a browser", exc_info=True)

    demo.on_serving = serving
    print("engram live: opening the sources…", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    try:
        demo.start()
    except SourceError as exc:
        print(f"engram live: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(
            f"engram live: {exc}\n(or try the pipeline without downloads: --random-weights)",
            file=sys.stderr,
        )
        return 2
    except (OSError, ValueError) as exc:  # ValueError: a speech model it cannot load
        print(f"engram live: {exc}", file=sys.stderr)
        return 2
    print(
        f"engram live: streaming (ready in {time.monotonic() - t0:.1f} s); Ctrl-C to stop",
        flush=True,
    )
    if config.random_weights:  # said once more where people look, not only in a warning
        print(f"engram live: image encoder: {RANDOM_WEIGHTS_NOTE}", flush=True)
    stop = threading.Event()
    signalled: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        if signalled:  # a second Ctrl-C / SIGTERM: stop now
            _exit_now(1, "engram live: stopped at once (second signal)")
        signalled.append(signum)
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    told = False
    try:
        deadline = time.monotonic() + args.duration_s if args.duration_s > 0 else None
        while not stop.wait(0.2):
            if deadline is not None and time.monotonic() >= deadline:
                break
            if not told and demo.sources_finished():
                told = True
                print(
                    "engram live: the source files ended; the page stays up to ask questions "
                    "(Ctrl-C to stop, --loop to repeat them)",
                    file=sys.stderr,
                )
    finally:
        if signalled:  # SIGTERM/SIGINT: stopped within SHUTDOWN_DEADLINE_S, whatever hangs
            watchdog = threading.Timer(
                SHUTDOWN_DEADLINE_S,
                _exit_now,
                (1, f"engram live: shutdown took over {SHUTDOWN_DEADLINE_S:g} s; exiting"),
            )
            watchdog.daemon = True
            watchdog.start()
        else:
            for s, handler in previous.items():
                signal.signal(s, handler)
        demo.stop()  # sources first, then perception and memory flush, then the page
    print(f"engram live: {demo.summary()}")
    if signalled:
        # Everything is flushed and closed; skip the interpreter's teardown, whose final
        # garbage collection over the loaded models took 10-17 s (measured, issue 18).
        _exit_now(0)
    return 0


#: longest ``engram live`` takes to stop after SIGTERM / Ctrl-C (then it exits regardless)
SHUTDOWN_DEADLINE_S = 4.5


def _exit_now(code: int, why: str = "") -> None:
    """Flush what was printed and logged, then end the process without teardown."""
    import logging as _logging
    import os

    if why:
        print(why, file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed pipe must not keep us alive
            pass
    _logging.shutdown()
    os._exit(code)
