"""Which frames a scene model was mapped from, and warnings when an evaluation scores them.

A model localizes the frames it was built from almost perfectly, so scoring them inflates recall (the
README's "wrong numbers" trap: a bag holding both walks, or `--split all`). Trainers store the mapping
frames' names and stamps in the model metadata (`teacher["mapping"]`); replay, localize and evaluate count how
many scored frames carry one of those stamps and warn.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

# Stamps within this of a mapping stamp are the same camera frame (bags round-trip stamps exactly; the slack
# absorbs float seconds in TUM files).
SAME_FRAME_NS = 1_000_000


def mapping_record(scene: Any, names: Sequence[str]) -> dict[str, Any]:
    """What the model metadata records about its mapping frames: names and stamps (ns; None when unknown)."""
    stamps = {f.name: f.stamp_ns for f in scene.frames}
    return {"frames": len(names), "names": list(names),
            "stamps_ns": [None if stamps.get(n) is None else int(stamps[n]) for n in names]}


def mapping_stamps(meta: Any) -> np.ndarray:
    """The sorted mapping stamps (ns) stored in a model's metadata (empty for models without the record)."""
    record = (getattr(meta, "teacher", None) or {}).get("mapping") or {}
    stamps = [int(s) for s in record.get("stamps_ns", []) if s is not None]
    return np.sort(np.array(stamps, dtype=np.int64))


def count_seen(meta: Any, stamps_ns: Iterable[int | None]) -> int:
    """How many of `stamps_ns` are (within SAME_FRAME_NS) stamps of the model's mapping frames."""
    mapped = mapping_stamps(meta)
    query = np.array([int(s) for s in stamps_ns if s is not None], dtype=np.int64)
    if mapped.size == 0 or query.size == 0:
        return 0
    i = np.clip(np.searchsorted(mapped, query), 1, mapped.size - 1) if mapped.size > 1 else np.zeros_like(query)
    nearest = np.minimum(np.abs(mapped[i] - query), np.abs(mapped[np.maximum(i - 1, 0)] - query))
    return int((nearest <= SAME_FRAME_NS).sum())


def seen_warning(meta: Any, stamps_ns: Sequence[int | None], what: str) -> str | None:
    """A warning line when some of the scored frames are the model's mapping frames, else None."""
    seen = count_seen(meta, stamps_ns)
    if not seen:
        return None
    total = sum(1 for s in stamps_ns if s is not None)
    return (f"{seen} of {total} {what} are frames the model was mapped from (same stamps): their accuracy is not "
            "relocalization accuracy; score a separate query walk (e.g. the query bag of `kd3d synth --bag`)")
