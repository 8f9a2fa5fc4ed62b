"""``MemoryClient``: recall over the bus (``MemoryQuery`` -> ``Recall`` on
``/memory/query``), and ``answer``: a question answered by the memory node's answerer
(``engram.memory.answer``: the answer object with its evidence, or an abstention);
disabled, it answers nothing (the ``--no-memory`` ablation)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from engram.runtime.messages import MemoryQuery, Recall

__all__ = ["MemoryClient"]

log = logging.getLogger(__name__)


class MemoryClient:
    """Recall through ``ask(MemoryQuery) -> Recall`` (e.g. a bus request). With
    ``enabled=False`` every recall is empty: the no-memory ablation."""

    def __init__(
        self, ask: Callable[[MemoryQuery], Recall] | None = None, *, enabled: bool = True
    ) -> None:
        self.ask = ask
        self.enabled = bool(enabled and ask is not None)
        self.queries = 0
        self.errors = 0
        self.last_error = ""

    def recall(
        self,
        text: str = "",
        *,
        memories: tuple[str, ...] = (),
        top_k: int = 20,
        near: Any = None,
        radius_m: float = 0.0,
        t0_ns: int = 0,
        t1_ns: int = 0,
    ) -> list[dict[str, Any]]:
        """Hits (dicts as in ``Recall.hits``); [] when disabled or on error."""
        if not self.enabled:
            return []
        query = MemoryQuery(
            text=text,
            memories=list(memories),
            top_k=int(top_k),
            near=None if near is None else np.asarray(near, np.float32)[:3],
            radius_m=float(radius_m),
            t0_ns=int(max(t0_ns, 0)),
            t1_ns=int(max(t1_ns, 0)),
        )
        self.queries += 1
        try:
            reply = self.ask(query)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - no answer is an empty answer
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("memory query %r failed: %s", text, self.last_error)
            return []
        if not isinstance(reply, Recall):
            self.errors += 1
            self.last_error = f"expected a Recall, got {type(reply).__name__}"
            return []
        if reply.error:
            self.errors += 1
            self.last_error = reply.error
            if memories and "unknown" in reply.error:  # that memory is not running: ask all
                return self.recall(
                    text, top_k=top_k, near=near, radius_m=radius_m, t0_ns=t0_ns, t1_ns=t1_ns
                )
            return []
        return list(reply.hits)

    def answer(self, question: str) -> dict[str, Any]:
        """The memory node's answer object for ``question`` (``Recall.answer``: answer,
        kind, value, confidence, abstained, evidence); {} when disabled or on error."""
        if not self.enabled or not question.strip():
            return {}
        self.queries += 1
        try:
            reply = self.ask(MemoryQuery(text=question, top_k=1, answer=True))  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - no answer is an empty answer
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("memory question %r failed: %s", question, self.last_error)
            return {}
        if not isinstance(reply, Recall) or reply.error:
            self.errors += 1
            self.last_error = reply.error if isinstance(reply, Recall) else "not a Recall"
            return {}
        return dict(reply.answer)
