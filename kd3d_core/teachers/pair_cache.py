"""On-disk cache of pairwise teacher outputs at label resolution: one atomic .npz per unordered pair.

A killed run resumes: pairs on disk are skipped. The cache key (checkpoint digest, network size, label size)
names a subfolder, so a different teacher or resolution never reuses stale results. Points and confidences are
stored as float16 (about 0.6 MB per pair at 160x120).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from kd3d_core.alignment.pairwise import PairPrediction
from kd3d_core.errors import Kd3dError
from kd3d_core.io_utils import atomic_file, atomic_write_text

FIELDS = ("pts_i", "conf_i", "pts_j", "conf_j")


def cache_key(**parts: object) -> str:
    """Short stable hash of the settings that determine the cached values."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class PairCache:
    """Pair results of one teacher configuration for one scene's frame list."""

    def __init__(self, root: Path | str, key: str, frame_names: Sequence[str]) -> None:
        self.root = Path(root) / key
        self.names = list(frame_names)
        self.root.mkdir(parents=True, exist_ok=True)
        manifest = self.root / "manifest.json"
        if not manifest.is_file():
            atomic_write_text(manifest, json.dumps({"key": key, "frames": len(self.names)}) + "\n")

    def path(self, i: int, j: int) -> Path:
        """File of the unordered pair (i, j), named after the frames (stable if frames are added)."""
        a, b = (self.names[i], self.names[j]) if i < j else (self.names[j], self.names[i])
        return self.root / f"{a.replace('/', '~')}__{b.replace('/', '~')}.npz"

    def has(self, i: int, j: int) -> bool:
        """True when the pair's results are on disk."""
        return self.path(i, j).is_file()

    def write(self, forward: PairPrediction, backward: PairPrediction) -> None:
        """Store both directions of one pair atomically (forward.i < forward.j)."""
        arrays = {}
        for tag, p in (("ij", forward), ("ji", backward)):
            for name, value in zip(FIELDS, (p.pts_i_HW3, p.conf_i_HW, p.pts_j_HW3, p.conf_j_HW)):
                arrays[f"{name}_{tag}"] = np.clip(np.nan_to_num(value), -6e4, 6e4).astype(np.float16)
        with atomic_file(self.path(forward.i, forward.j), suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

    def read(self, i: int, j: int) -> tuple[PairPrediction, PairPrediction]:
        """Both directions (i -> j, j -> i) of an unordered pair, i < j."""
        path = self.path(i, j)
        try:
            with np.load(path, allow_pickle=False) as z:
                out = []
                for tag, (a, b) in (("ij", (i, j)), ("ji", (j, i))):
                    vals = [z[f"{name}_{tag}"].astype(np.float32) for name in FIELDS]
                    out.append(PairPrediction(a, b, *vals))
        except (OSError, KeyError, ValueError) as err:
            raise Kd3dError(f"pair cache file {path} is unreadable ({err}); delete it to recompute") from err
        return out[0], out[1]


class CachedPairs:
    """A re-iterable pair source over the cache (what the aligner streams twice)."""

    def __init__(self, cache: PairCache, pairs: Sequence[tuple[int, int]]) -> None:
        self.cache = cache
        self.pairs = [p for p in pairs if cache.has(*p)]

    def __iter__(self) -> Iterator[PairPrediction]:
        for i, j in self.pairs:
            yield from self.cache.read(i, j)
