"""Global image descriptors for retrieving the mapping frames nearest to a query.

Two kinds (ClassicalConfig.global_descriptor): a grey thumbnail, and a tf-idf bag of visual words over the
local descriptors. Both give unit-norm float32 vectors, so retrieval is a dot product with the map's matrix.
"""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from kd3d_core.baselines.config import FeatureType


def thumbnail_descriptor(rgb_HW3: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Blurred, zero-mean, unit-norm grey thumbnail, flattened (float32)."""
    grey = cv2.cvtColor(rgb_HW3, cv2.COLOR_RGB2GRAY).astype(np.float32)
    small = cv2.resize(grey, size_wh, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (3, 3), 0.7)
    vec = (small - small.mean()).ravel()
    return (vec / max(float(np.linalg.norm(vec)), 1e-6)).astype(np.float32)


def descriptors_as_float(descriptors_ND: np.ndarray, feature: FeatureType) -> np.ndarray:
    """Descriptors in a Euclidean space: ORB bits unpacked to 0/1 (L2^2 = Hamming), SIFT as float."""
    if feature is FeatureType.ORB:
        return np.unpackbits(descriptors_ND, axis=1).astype(np.float32)
    return descriptors_ND.astype(np.float32)


class Vocabulary(NamedTuple):
    """Visual words (V, D') in the Euclidean descriptor space and their idf weights (V,)."""

    words_VD: np.ndarray
    idf_V: np.ndarray


def _assign(points_ND: np.ndarray, words_VD: np.ndarray) -> np.ndarray:
    """Index of the nearest word of each point."""
    d2 = (np.square(points_ND).sum(1)[:, None] - 2.0 * points_ND @ words_VD.T + np.square(words_VD).sum(1)[None])
    return np.argmin(d2, axis=1)


def learn_vocabulary(per_frame_descriptors: list[np.ndarray], feature: FeatureType, size: int, iterations: int,
                     rng: np.random.Generator, max_samples: int = 10000) -> Vocabulary:
    """k-means (Lloyd, random initial words) on a sample of the map's descriptors, plus idf weights."""
    stacked = np.concatenate([d for d in per_frame_descriptors if len(d)] or [np.zeros((0, 1), np.uint8)])
    if len(stacked) < size:
        raise ValueError(f"{len(stacked)} descriptors cannot make a vocabulary of {size} words")
    sample = stacked[rng.choice(len(stacked), min(max_samples, len(stacked)), replace=False)]
    points = descriptors_as_float(sample, feature)
    words = points[rng.choice(len(points), size, replace=False)].copy()
    for _ in range(iterations):
        labels = _assign(points, words)
        order = np.argsort(labels, kind="stable")
        used, starts = np.unique(labels[order], return_index=True)
        sums = np.add.reduceat(points[order], starts, axis=0)  # per-word sums; much faster than np.add.at
        words[used] = sums / np.diff(np.append(starts, len(points)))[:, None]
    seen = np.zeros(size)
    for d in per_frame_descriptors:
        if len(d):
            seen[np.unique(_assign(descriptors_as_float(d, feature), words))] += 1
    idf = np.log((len(per_frame_descriptors) + 1) / (seen + 1)).astype(np.float32)
    return Vocabulary(words.astype(np.float32), idf)


def bow_descriptor(descriptors_ND: np.ndarray, feature: FeatureType, vocabulary: Vocabulary) -> np.ndarray:
    """tf-idf bag-of-words histogram, L2-normalised (float32, V)."""
    hist = np.zeros(len(vocabulary.idf_V), np.float32)
    if len(descriptors_ND):
        labels = _assign(descriptors_as_float(descriptors_ND, feature), vocabulary.words_VD)
        hist = np.bincount(labels, minlength=len(hist)).astype(np.float32) / len(labels)
    hist *= vocabulary.idf_V
    return hist / max(float(np.linalg.norm(hist)), 1e-6)


def top_k(database_FD: np.ndarray, query_D: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k database rows most similar (dot product) to the query, best first."""
    scores = database_FD @ query_D
    k = min(k, len(scores))
    best = np.argpartition(-scores, k - 1)[:k]
    return best[np.argsort(-scores[best])]
