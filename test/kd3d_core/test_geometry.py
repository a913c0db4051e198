import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kd3d_core.errors import Kd3dError
from kd3d_core.geometry import (invert_pose, is_valid_pose, look_at, make_pose, matrix_to_quat_xyzw, pose_error,
                                pose_from_tq, project_points, quat_xyzw_to_matrix, resize_with_intrinsics,
                                scale_intrinsics, transform_points, umeyama, backproject_depth)


def _random_pose(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    return pose_from_tq(rng.normal(size=3), q)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(lambda q: np.linalg.norm(q) > 0.1))
def test_quaternion_round_trip(q):
    R = quat_xyzw_to_matrix(np.array(q))
    R2 = quat_xyzw_to_matrix(matrix_to_quat_xyzw(R))
    np.testing.assert_allclose(R, R2, atol=1e-9)
    assert matrix_to_quat_xyzw(R)[3] >= 0


def test_invert_and_transform():
    rng = np.random.default_rng(0)
    T = _random_pose(rng)
    p = rng.normal(size=(10, 3))
    np.testing.assert_allclose(transform_points(invert_pose(T), transform_points(T, p)), p, atol=1e-12)
    assert is_valid_pose(T)
    bad = T.copy()
    bad[0, 0] = np.inf
    assert not is_valid_pose(bad)


def test_bad_quaternion_is_refused():
    with pytest.raises(Kd3dError, match="invalid quaternion"):
        quat_xyzw_to_matrix(np.zeros(4))


def test_pose_error_of_known_offset():
    T = look_at(np.array([0.0, 0, 1]), np.array([1.0, 0, 1]))
    R10 = make_pose(quat_xyzw_to_matrix([0, 0, np.sin(np.radians(5)), np.cos(np.radians(5))]), [0, 0, 0])
    T2 = T @ R10
    T2[:3, 3] += [0.03, 0.04, 0]
    err = pose_error(T2, T)
    assert err.translation_m == pytest.approx(0.05)
    assert err.rotation_deg == pytest.approx(10.0)


def test_look_at_is_optical_frame():
    T = look_at(np.array([0.0, 0, 0]), np.array([2.0, 0, 0]))
    np.testing.assert_allclose(T[:3, 2], [1, 0, 0], atol=1e-12)  # z forward
    np.testing.assert_allclose(T[:3, 1], [0, 0, -1], atol=1e-12)  # y down (world z up)


def test_resize_keeps_projection_consistent():
    K = np.array([[100.0, 0, 31.5], [0, 100.0, 23.5], [0, 0, 1]])
    img = np.zeros((48, 64, 3), np.uint8)
    small, K2 = resize_with_intrinsics(img, K, (32, 24))
    assert small.shape == (24, 32, 3)
    np.testing.assert_allclose(K2, scale_intrinsics(K, 0.5, 0.5))
    # the image centre maps to the image centre
    assert K2[0, 2] == pytest.approx(15.5) and K2[1, 2] == pytest.approx(11.5)


def test_backproject_then_project_is_identity():
    K = np.array([[80.0, 0, 20], [0, 80.0, 15], [0, 0, 1]])
    depth = np.full((30, 40), 2.0, np.float32)
    pts = backproject_depth(depth, K).reshape(-1, 3)
    uv, z = project_points(K, np.eye(4), pts)
    vv, uu = np.mgrid[0:30, 0:40]
    np.testing.assert_allclose(uv, np.stack([uu.ravel(), vv.ravel()], 1), atol=1e-9)
    np.testing.assert_allclose(z, 2.0)


def test_umeyama_recovers_similarity():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(50, 3))
    R = quat_xyzw_to_matrix(rng.normal(size=4))
    dst = 2.5 * src @ R.T + [1, 2, 3]
    sim = umeyama(src, dst)
    assert sim.scale == pytest.approx(2.5)
    np.testing.assert_allclose(sim.apply(src), dst, atol=1e-9)
    with pytest.raises(Kd3dError, match="umeyama needs"):
        umeyama(src[:2], dst[:2])
