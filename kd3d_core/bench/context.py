"""State shared by the benchmark families of one run: rooms, distilled models, classical maps, DUSt3R timing.

Families ask the context for what they need; whatever an earlier family already built (e.g. the accuracy
family's models) is reused, and whatever is missing (e.g. `--only speed`) is built on demand.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from kd3d_core.bench.config import BenchConfig
from kd3d_core.bench.rooms import Distilled, Room, distil, prepare_room


@dataclass(frozen=True)
class BuiltMap:
    """A classical map built from a room's mapping frames."""

    name: str
    path: Path
    build_s: float


@dataclass
class BenchContext:
    """Caches of one run."""

    config: BenchConfig
    rooms: dict[str, Room] = field(default_factory=dict)
    models: dict[tuple[str, str], Distilled] = field(default_factory=dict)
    maps: dict[tuple[str, str], BuiltMap] = field(default_factory=dict)
    extras: dict[str, object] = field(default_factory=dict)
    failures: dict[tuple[str, str], Exception] = field(default_factory=dict)

    def room(self, preset: str) -> Room:
        """The rendered, labelled room of a preset."""
        if preset not in self.rooms:
            self.rooms[preset] = prepare_room(self.config, preset)
        return self.rooms[preset]

    def students(self) -> list[str]:
        """Students to benchmark (config order, or every registered architecture)."""
        from kd3d_core.students import list_architectures

        return list(self.config.students) or list_architectures()

    def model(self, preset: str, student: str) -> Distilled:
        """A student distilled on a room (trained now unless this run already did)."""
        key = (preset, student)
        if key in self.failures:  # do not retrain (and fail again) for every family
            raise self.failures[key]
        if key not in self.models:
            try:
                self.models[key] = distil(self.config, self.room(preset), student)
            except Exception as err:
                self.failures[key] = err
                raise
        return self.models[key]

    def classical_map(self, preset: str, baseline: str) -> BuiltMap:
        """A classical map of a room (built now unless this run already did)."""
        from kd3d_core.baselines import ClassicalConfig, ClassicalMap

        key = (preset, baseline)
        if key not in self.maps:
            room = self.room(preset)
            t0 = time.perf_counter()
            cmap = ClassicalMap.build(room.scene(), ClassicalConfig(feature=baseline, seed=self.config.seed),
                                      progress=self.config.progress)
            build_s = time.perf_counter() - t0
            path = self.config.workdir / "maps" / room.path.name / f"classical-{baseline}.npz"
            cmap.save(path)
            self.maps[key] = BuiltMap(f"classical-{baseline}", path, build_s)
        return self.maps[key]

    def device(self) -> str:
        """The torch device string the students run on."""
        import torch

        if self.config.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.config.device
