"""A TF buffer for offline use: compose /tf and /tf_static into the transform between two frames at a stamp.

Frames form a tree (each child has one parent, as in tf2). A lookup walks from both frames to their common
ancestor and multiplies the edges; static edges are valid at every stamp, dynamic edges follow the
interpolation rule of `kd3d_core.bags.trajectory` (lerp + slerp between neighbours, nearest within max_dt).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from kd3d_core.bags.reader import TF_TYPE, BagReader
from kd3d_core.bags.trajectory import Trajectory
from kd3d_core.errors import BagError, MessageError
from kd3d_core.geometry import invert_pose
from kd3d_core.messages import header_stamp_ns, stamped_pose_from_msg

TF_TOPICS = ("/tf",)
TF_STATIC_TOPICS = ("/tf_static",)


class TfLookupError(BagError):
    """No transform between two frames at a stamp (frames not connected, or no sample close enough)."""


@dataclass
class _Edge:
    parent: str
    static_T: np.ndarray | None = None
    stamps: list[int] = field(default_factory=list)
    poses: list[np.ndarray] = field(default_factory=list)
    track: Trajectory | None = None
    bad: int = 0


class TfBuffer:
    """Transforms parent_T_child keyed by child frame."""

    def __init__(self) -> None:
        self._edges: dict[str, _Edge] = {}

    @property
    def frames(self) -> set[str]:
        """Every frame name seen, parents and children."""
        return set(self._edges) | {e.parent for e in self._edges.values()}

    def _edge(self, parent: str, child: str) -> _Edge:
        if not parent or not child or parent == child:
            raise BagError(f"invalid transform {parent!r} -> {child!r}")
        edge = self._edges.setdefault(child, _Edge(parent))
        if edge.parent != parent:
            raise BagError(f"TF frame {child!r} has two parents, {edge.parent!r} and {parent!r}")
        return edge

    def add(self, parent: str, child: str, stamp_ns: int, parent_T_child: np.ndarray | None,
            static: bool = False) -> None:
        """Add one transform; None records a non-finite transform (the edge fails lookups naming it)."""
        edge = self._edge(parent.lstrip("/"), child.lstrip("/"))
        if parent_T_child is None:
            edge.bad += 1
        elif static:
            edge.static_T = np.asarray(parent_T_child, dtype=np.float64)
        else:
            edge.stamps.append(int(stamp_ns))
            edge.poses.append(np.asarray(parent_T_child, dtype=np.float64))
            edge.track = None

    def _chain(self, frame: str) -> list[str]:
        chain, seen = [frame], {frame}
        while chain[-1] in self._edges:
            parent = self._edges[chain[-1]].parent
            if parent in seen:
                raise BagError(f"TF has a loop through frame {parent!r}")
            chain.append(parent)
            seen.add(parent)
        return chain

    def ancestors(self, frame: str) -> list[str]:
        """`frame` and its parents up to the root of its tree, nearest first."""
        return self._chain(frame.lstrip("/"))

    def connected(self, parent: str, child: str) -> bool:
        """True when `parent` is `child` or one of its ancestors (a lookup parent <- child can succeed)."""
        parent, child = parent.lstrip("/"), child.lstrip("/")
        return child in self.frames and parent in self._chain(child)

    def _edge_at(self, child: str, stamp_ns: int, max_dt_ns: int) -> np.ndarray:
        edge = self._edges[child]
        if edge.bad:
            raise BagError(f"TF {edge.parent} -> {child} has {edge.bad} non-finite (NaN/INF) transforms")
        if edge.static_T is not None:
            return edge.static_T
        if edge.track is None:
            edge.track = Trajectory(edge.stamps, edge.poses, edge.parent, child)
        T = edge.track.at(stamp_ns, max_dt_ns)
        if T is None:
            span = edge.track.span_ns
            raise TfLookupError(f"no TF {edge.parent} -> {child} within {max_dt_ns / 1e9:g} s of stamp "
                                f"{stamp_ns} (samples span {span})")
        return T

    def _root_T(self, chain: list[str], stamp_ns: int, max_dt_ns: int) -> np.ndarray:
        T = np.eye(4)
        for child in reversed(chain[:-1]):
            T = T @ self._edge_at(child, stamp_ns, max_dt_ns)
        return T

    def lookup(self, target: str, source: str, stamp_ns: int, max_dt_ns: int = 0) -> np.ndarray:
        """target_T_source at `stamp_ns` (maps points in `source` to `target`), like tf2's lookupTransform.

        Raises:
            TfLookupError: unknown frames, frames in different trees, or no dynamic sample near the stamp.
            BagError: an edge of the chain holds NaN/INF transforms.
        """
        target, source = target.lstrip("/"), source.lstrip("/")
        for name in (target, source):
            if name not in self.frames:
                known = ", ".join(sorted(self.frames)) or "none"
                raise TfLookupError(f"TF frame {name!r} is not in the bag (frames: {known})")
        up_s, up_t = self._chain(source), self._chain(target)
        common = next((f for f in up_s if f in set(up_t)), None)
        if common is None:
            raise TfLookupError(f"TF frames {target!r} and {source!r} are not connected")
        chain_s = up_s[:up_s.index(common) + 1]
        chain_t = up_t[:up_t.index(common) + 1]
        common_T_source = self._root_T(chain_s, stamp_ns, max_dt_ns)
        common_T_target = self._root_T(chain_t, stamp_ns, max_dt_ns)
        return invert_pose(common_T_target) @ common_T_source

    def add_tf_message(self, msg: object, static: bool) -> None:
        """Add every transform of a tf2_msgs/TFMessage."""
        for ts in msg.transforms:  # type: ignore[attr-defined]
            try:
                T = stamped_pose_from_msg(ts).T
            except MessageError:
                T = None
            self.add(str(ts.header.frame_id), str(ts.child_frame_id), header_stamp_ns(ts), T, static)


def load_tf(bag: BagReader, tf_topics: Iterable[str] = TF_TOPICS,
            static_topics: Iterable[str] = TF_STATIC_TOPICS) -> TfBuffer:
    """A TfBuffer with every TFMessage on the bag's /tf (dynamic) and /tf_static (static) topics."""
    tf_topics, static_topics = list(tf_topics), list(static_topics)
    present = [t for t in tf_topics + static_topics if bag.topics.get(t) and bag.topics[t].msgtype == TF_TYPE]
    buffer = TfBuffer()
    for item in bag.messages(present):
        buffer.add_tf_message(item.msg, static=item.topic in static_topics)
    return buffer
