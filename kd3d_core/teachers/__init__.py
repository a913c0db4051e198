"""Teachers: DUSt3R pairwise pointmaps (+ our global alignment) and sensor depth, written as labels.

Entry point: `teach_scene(scene_root, TeachConfig(...)) -> TeachResult`. Heavy modules (torch, the DUSt3R model
code) are imported only when the DUSt3R teacher runs.
"""
from kd3d_core.teachers.config import DeviceChoice, Dust3rConfig, TeachConfig, TeacherKind
from kd3d_core.teachers.depth import DepthTeacherConfig, depth_confidence, depth_label
from kd3d_core.teachers.pairs import PairGraphConfig, make_pairs
from kd3d_core.teachers.teach import TeachResult, teach_scene

__all__ = ["DepthTeacherConfig", "DeviceChoice", "Dust3rConfig", "PairGraphConfig", "TeachConfig", "TeachResult",
           "TeacherKind", "depth_confidence", "depth_label", "make_pairs", "teach_scene"]
