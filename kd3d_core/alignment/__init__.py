"""Global alignment of pairwise pointmaps (our own, scalable): see solve.align_pairs."""
from kd3d_core.alignment.anchors import AnchorConfig, DepthAnchors, FeatureKind, find_anchors
from kd3d_core.alignment.bench import alignment_benchmark
from kd3d_core.alignment.depth_correction import DepthCorrectionConfig
from kd3d_core.alignment.graph import EdgeSet, GraphConfig, GraphSolution, solve_graph
from kd3d_core.alignment.pairwise import CanonicalFrames, PairPrediction, PairSource
from kd3d_core.alignment.solve import AlignConfig, AlignmentResult, align_pairs

__all__ = ["AlignConfig", "AlignmentResult", "AnchorConfig", "CanonicalFrames", "DepthAnchors", "DepthCorrectionConfig",
           "EdgeSet", "FeatureKind", "GraphConfig", "GraphSolution", "PairPrediction", "PairSource", "align_pairs",
           "alignment_benchmark", "find_anchors", "solve_graph"]
