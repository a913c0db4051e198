"""Baselines to compare the distilled relocalizer with.

`ClassicalMap` is the classical feature-based relocalizer (ORB/SIFT + depth-lifted 3D points + global image
retrieval + PnP-RANSAC), built from the same mapping frames the students learn from:

    cmap = ClassicalMap.build(scene, ClassicalConfig())
    cmap.save("map.npz"); cmap = ClassicalMap.load("map.npz")
    estimate = cmap.localize(rgb_HW3, K)          # a kd3d_core.localization.PoseEstimate
"""
from kd3d_core.baselines.classical import ClassicalMap
from kd3d_core.baselines.config import ClassicalConfig, FeatureType, GlobalDescriptorKind

__all__ = ["ClassicalConfig", "ClassicalMap", "FeatureType", "GlobalDescriptorKind"]
