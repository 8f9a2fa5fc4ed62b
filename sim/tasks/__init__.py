"""The memory-dependent task suite: ``TASKS`` maps a task name to its env class.

Tabletop (arm): ``cups``, ``button_sequence``, ``put_back``, ``count``.
Apartment (mobile base): ``fetch_seen``, ``where_heard``.
Each module's docstring gives the task's phases, decision time, success
criterion and chance rate.
"""

from __future__ import annotations

from engram.sim.tasks.button_sequence import ButtonSequenceEnv
from engram.sim.tasks.count import CountEnv
from engram.sim.tasks.cups import CupsEnv
from engram.sim.tasks.fetch_seen import FetchSeenEnv
from engram.sim.tasks.put_back import PutBackEnv
from engram.sim.tasks.where_heard import WhereHeardEnv

__all__ = ["TASKS"]

TASKS: dict[str, type] = {
    "cups": CupsEnv,
    "button_sequence": ButtonSequenceEnv,
    "put_back": PutBackEnv,
    "count": CountEnv,
    "fetch_seen": FetchSeenEnv,
    "where_heard": WhereHeardEnv,
}
