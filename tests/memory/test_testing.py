"""The memory contract (``engram.memory.testing.check_memory``) over every registered
memory: write / recall / consolidate / len, save -> load gives the same recalls, reset,
stats, bad input refused with a clear error and nothing lost. Also: the checker
catches a memory that breaks the contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from engram.memory.base import Hit, Memory
from engram.memory.testing import MemoryContractError, check_memory, memory_problems
from engram.runtime import registry
from engram.runtime.messages import MemoryQuery, Message


@pytest.mark.parametrize("name", registry.known("memory"))
def test_every_registered_memory_keeps_the_contract(name: str) -> None:
    check_memory(registry.get("memory", name))


def test_the_standard_memories_are_registered() -> None:
    from engram.memory.system import DEFAULT_MEMORIES

    assert set(DEFAULT_MEMORIES) <= set(registry.known("memory"))


class _Forgetful(Memory):
    """Remembers the labels of percepts, but its save keeps nothing."""

    name = "forgetful"
    accepts = ("Percept",)

    def __init__(self) -> None:
        self.labels: list[tuple[str, int]] = []

    def write(self, msg: Message, *, topic: str = "") -> None:
        if msg.TYPE == "Percept":
            self.labels += [(lab, msg.stamp_ns) for lab in msg.object_labels]  # type: ignore[attr-defined]

    def recall(self, query: MemoryQuery) -> list[Hit]:
        found = [(lab, t) for lab, t in self.labels if lab.replace("_", " ") in query.text]
        return [Hit(self.name, 1.0, text=lab, stamp_ns=t) for lab, t in found[: query.top_k]]

    def save(self, directory: str | Path) -> None:
        (Path(directory) / "forgetful.txt").write_text("")

    def load(self, directory: str | Path) -> None:
        path = Path(directory) / "forgetful.txt"
        if not path.exists():
            raise ValueError(f"{directory}: nothing saved there")
        self.labels = []

    def reset(self) -> None:
        self.labels = []

    def __len__(self) -> int:
        return len(self.labels)


class _Careless(_Forgetful):
    """Keeps its records across save/load, but fails on bad input the wrong way."""

    name = "careless"

    def write(self, msg: Message, *, topic: str = "") -> None:
        emb = getattr(msg, "embedding", None)
        if msg.TYPE == "Percept" and emb is not None and emb.size != 32:
            raise IndexError("oops")
        super().write(msg, topic=topic)

    def save(self, directory: str | Path) -> None:
        (Path(directory) / "forgetful.txt").write_text(repr(self.labels))

    def load(self, directory: str | Path) -> None:
        path = Path(directory) / "forgetful.txt"
        if not path.exists():
            raise ValueError(f"{directory}: nothing saved there")
        self.labels = eval(path.read_text())  # noqa: S307 - test double


def test_the_checker_names_what_a_memory_gets_wrong() -> None:
    problems = memory_problems(_Forgetful)
    assert any(p.startswith("after save -> load: len 0 !=") for p in problems), problems
    with pytest.raises(MemoryContractError, match="_Forgetful"):
        check_memory(_Forgetful)
    problems = memory_problems(_Careless)
    assert problems == [
        "a percept whose embeddings change dimension: refused with IndexError('oops'); "
        "bad input must raise ValueError"
    ]
    assert memory_problems(lambda: object()) == [  # type: ignore[arg-type, return-value]
        "the factory returned object, not a engram.memory.base.Memory"
    ]
