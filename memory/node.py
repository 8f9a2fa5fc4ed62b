"""``MemoryNode``: the memory system on the bus (registered as node type ``memory``).

Inputs (default topics, remappable by a launch graph):

==================  =============  ============  ==========================================
port                type           policy        what happens
==================  =============  ============  ==========================================
``percepts``        Percept        queue(16)     written to every memory that accepts it
``transcripts``     Transcript     queue(32)     "
``sound_events``    SoundEvent     queue(32)     "
``robot_state``     RobotState     latest        kept as ``latest_robot_state``; written
``instruction``     Instruction    queue(8)      " (starts an episode)
``plan``            PlanStep       queue(32)     " (episode steps and outcome)
==================  =============  ============  ==========================================

Service ``query`` on ``/memory/query``: ``MemoryQuery -> Recall`` over the bus's
request/reply (a query with ``answer=True`` also gets ``Recall.answer``: the
``engram.memory.answer.Answerer``'s answer object, with evidence or an abstention,
beside the ranked hits) (``InProcBus`` in one process, ``ZmqBus`` across processes), so
planners and a live UI elsewhere can ask. A query without an embedding gets
one from the node's text encoder (``text_encoder``, MiniLM by default), and
every memory may embed the text in its own spaces through the shared
``Embedders``. Errors come back in ``Recall.error``; the node keeps running.

Writes go through ``MemorySystem.submit`` (a bounded input queue; a message that
cannot be queued within ``submit_timeout_s`` is dropped and counted). The system
is built in ``configure`` (or passed in) and closed, with a checkpoint when it
persists, when the node stops. A timer
runs ``consolidate`` every ``consolidate_every_s``. The heartbeat carries
per-memory p95 latencies and record counts.

Fleet: with ``store: milvus://host:port`` (or a Milvus Lite ``x.db``) the long-term
memories are also mirrored to that store under ``robot_id`` (``engram.memory.fleet``),
and a query with ``memories: ["fleet"]`` is answered from every robot's records.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, cast

from engram.memory.answer import Answerer, AnswererConfig, NameTable
from engram.memory.embedding import Embedders, load_text_encoder
from engram.memory.system import MemorySystem, MemorySystemConfig, default_memories
from engram.runtime.messages import MemoryQuery, Message, Recall, RobotState
from engram.runtime.node import Input, Node, NodeConfig, Service

__all__ = ["MemoryNode", "MemoryNodeConfig", "embed_query", "make_embedders"]

log = logging.getLogger(__name__)


@dataclass
class MemoryNodeConfig(NodeConfig):
    """Settings of the memory node."""

    memories: list[str] = field(default_factory=list)  # memory names to run; [] = all default
    root: str = ""  # persistence directory ("" = in memory only)
    workers: int = 0  # threads for the memory lanes; 0 = auto (MemorySystemConfig.workers)
    input_queue: int = 256  # messages waiting for the memories
    submit_timeout_s: float = 0.5  # wait this long for room in the queue, then drop
    text_encoder: str = "minilm"  # encoder for space "text" (queries, facts); "" = none
    image_text_encoder: str = ""  # text tower for space "image" (e.g. "clip"); "" = none
    consolidate_every_s: float = 60.0  # consolidation period; 0 = never
    checkpoint_every: int = 10_000  # messages between checkpoints (with root)
    recall_timeout_s: float = 5.0  # slower memories are left out of a recall
    # long-term store: "sqlite" (this robot's own, the default) or a fleet store shared
    # by robots, "milvus://host:port" / "path/x.db" (engram.memory.fleet mirrors to it)
    store: str = "sqlite"
    robot_id: str = ""  # this robot's name in a fleet store ("" = the node's name)
    abstain_below: float = AnswererConfig.abstain_below  # answers less sure than this abstain


def make_embedders(text_encoder: str = "minilm", image_text_encoder: str = "") -> Embedders:
    """The memories' text embedders: ``text_encoder`` for space "text" (queries, facts),
    ``image_text_encoder`` (e.g. "clip") for space "image"; "" leaves a space out. The
    names are encoders of the registry (kind "encoder"), built with their defaults."""
    encoders = {}
    if text_encoder:
        encoders["text"] = load_text_encoder(text_encoder)
    if image_text_encoder:
        encoders["image"] = load_text_encoder(image_text_encoder)
    return Embedders(encoders)


def embed_query(query: MemoryQuery, embedders: Embedders | None) -> MemoryQuery:
    """``query`` with an embedding of its text (space "text") when it has none."""
    if query.embedding is None and query.text and embedders is not None:
        vec = embedders.embed("text", query.text)
        if vec is not None:
            return query.replace(embedding=vec)  # type: ignore[return-value]
    return query


class MemoryNode(Node[MemoryNodeConfig]):
    """Percepts and friends in, recall over request/reply. See the module docstring."""

    INPUTS = {
        "percepts": Input("Percept", policy="queue(16)"),
        "transcripts": Input("Transcript", policy="queue(32)"),
        "sound_events": Input("SoundEvent", policy="queue(32)"),
        "robot_state": Input("RobotState", policy="latest"),
        "instruction": Input("Instruction", policy="queue(8)"),
        "plan": Input("PlanStep", policy="queue(32)"),
    }
    SERVICES = {"query": Service("MemoryQuery", "Recall", topic="/memory/query")}
    Config = MemoryNodeConfig

    def __init__(
        self,
        config: MemoryNodeConfig | dict[str, Any] | None = None,
        *,
        system: MemorySystem | None = None,
        embedders: Embedders | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, **kwargs)
        self.system = system
        self.embedders = embedders
        self.latest_robot_state: RobotState | None = None
        self._latest_stamp_ns = 0
        self.answerer: Answerer | None = None
        self.fleet: Any = None  # engram.memory.fleet.FleetMirror when store is a fleet store

    # ---- lifecycle ----------------------------------------------------------------------
    def on_configure(self) -> None:
        cfg = self.config
        if self.embedders is None:
            self.embedders = make_embedders(cfg.text_encoder, cfg.image_text_encoder)
        if self.system is None:
            mems = default_memories(self.embedders, include=cfg.memories or None)
            self.system = MemorySystem(
                mems,
                embedders=self.embedders,
                config=MemorySystemConfig(
                    workers=cfg.workers,
                    input_queue=cfg.input_queue,
                    root=cfg.root,
                    checkpoint_every=cfg.checkpoint_every,
                    recall_timeout_s=cfg.recall_timeout_s,
                ),
            )
        embedders = self.embedders
        embed = (
            (lambda text: embedders.embed("text", text))
            if embedders is not None and embedders.has("text")
            else None
        )
        system = cast(MemorySystem, self.system)
        self.answerer = Answerer(
            system.recall,
            memories=system.names,
            names=NameTable(embed=embed),  # type: ignore[arg-type]
            config=AnswererConfig(abstain_below=cfg.abstain_below),
        )
        if cfg.store not in ("", "sqlite"):
            from engram.memory.fleet import attach_fleet

            self.fleet = attach_fleet(
                system, cfg.store, robot_id=cfg.robot_id or self.name, root=cfg.root
            )
        if cfg.consolidate_every_s > 0:
            self.add_timer(1.0 / cfg.consolidate_every_s, self._consolidate)

    def on_stop(self) -> None:
        if self.fleet is not None:
            self.fleet.close()
        if self.system is not None:
            self.system.close()

    # ---- inputs -------------------------------------------------------------------------
    def _submit(self, port: str, msg: Message) -> None:
        self._latest_stamp_ns = max(self._latest_stamp_ns, msg.stamp_ns)
        ok = cast(MemorySystem, self.system).submit(
            msg, topic=self.topic(port), timeout_s=self.config.submit_timeout_s
        )
        if not ok:
            self.count("memory_dropped")

    def on_percepts(self, msg: Message) -> None:
        self._submit("percepts", msg)

    def on_transcripts(self, msg: Message) -> None:
        if not getattr(msg, "final", True):
            # a partial: the utterance is still being spoken and its final replaces it;
            # stored, it would leave half-heard sentences as episodes and facts
            self.count("partial_transcripts_skipped")
            return
        self._submit("transcripts", msg)

    def on_sound_events(self, msg: Message) -> None:
        self._submit("sound_events", msg)

    def on_robot_state(self, msg: Message) -> None:
        self.latest_robot_state = msg  # type: ignore[assignment]
        self._submit("robot_state", msg)

    def on_instruction(self, msg: Message) -> None:
        self._submit("instruction", msg)

    def on_plan(self, msg: Message) -> None:
        self._submit("plan", msg)

    # ---- service ------------------------------------------------------------------------
    def on_query(self, request: Message) -> Recall:
        if not isinstance(request, MemoryQuery):
            return Recall(
                query_seq=request.seq,
                error=f"/memory/query expects a MemoryQuery, got {type(request).__name__}",
            )
        try:
            if self.fleet is not None and "fleet" in request.memories:  # across the fleet
                hits = self.fleet.recall(embed_query(request, self.embedders))
            else:
                hits = self.system.recall(embed_query(request, self.embedders))  # type: ignore[arg-type]
            answer = {}
            if request.answer and request.text.strip() and self.answerer is not None:
                answer = self.answerer.ask(request.text).to_dict()
                self.count("answers")
                if answer["abstained"]:
                    self.count("abstentions")
            return Recall(
                query_seq=request.seq,
                query_text=request.text,
                hits=[h.to_dict() for h in hits],
                answer=answer,
            )
        except Exception as exc:  # noqa: BLE001 - answered, not raised: the node keeps serving
            self.count("query_errors")
            log.warning("memory query failed: %s", exc)
            return Recall(query_seq=request.seq, query_text=request.text, error=f"{exc}")

    # ---- timers / health ----------------------------------------------------------------
    def _consolidate(self) -> None:
        if self.system is not None and self._latest_stamp_ns:
            self.system.consolidate(now_ns=self._latest_stamp_ns)

    def health(self) -> dict[str, Any]:
        if self.system is None:
            return {}
        st = self.system.stats()
        latency: dict[str, float] = {}
        info: dict[str, Any] = {"records": {}}
        for name, m in st["memories"].items():
            for op in ("write", "recall"):
                p95 = m["latency"][op].get("p95_ms")
                if p95 is not None:
                    latency[f"{name}_{op}_p95"] = p95
            info["records"][name] = m["memory"].get("records", 0)
        if st.get("load_errors"):  # damaged files found on open: visible in every heartbeat
            info["load_errors"] = st["load_errors"]
        return {
            "counters": {
                "memory_submitted": st["submitted"],
                "memory_dropped": st["dropped"],
                "memory_recalls": st["recalls"],
                "memory_errors": sum(m["errors"] for m in st["memories"].values()),
            },
            "latency_ms": latency,
            "info": info,
        }
