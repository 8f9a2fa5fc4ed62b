"""Settings of a ``Store``: batching, durability, garbage collection."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StoreConfig"]


@dataclass
class StoreConfig:
    """Batching and durability of a ``Store``."""

    batch_records: int = 256  # commit automatically once this many records are buffered
    batch_interval_s: float = 1.0  # ... or once the oldest buffered record is this old (on put)
    durable: bool = False  # fsync arrays + synchronous=FULL: survive power loss, not only kills
    read_only: bool = False  # open for reading: no lock, no writes, no repair
    # sync() compacts array files / vacuums SQLite once more than this share of their
    # bytes is dead (superseded or deleted records): files stay within ~2x live data
    max_garbage_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.batch_records < 1:
            raise ValueError(f"StoreConfig.batch_records must be >= 1, got {self.batch_records}")
        if not 0.0 < self.max_garbage_fraction < 1.0:
            raise ValueError(
                "StoreConfig.max_garbage_fraction must be in (0, 1), "
                f"got {self.max_garbage_fraction}"
            )
        if self.batch_interval_s < 0:
            raise ValueError(
                f"StoreConfig.batch_interval_s must be >= 0, got {self.batch_interval_s}"
            )
