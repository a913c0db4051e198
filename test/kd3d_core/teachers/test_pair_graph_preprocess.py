"""Pair graphs and DUSt3R's preprocessing geometry (sizes, crops, intrinsics)."""
from __future__ import annotations

import numpy as np
import pytest

from kd3d_core.errors import ConfigError
from kd3d_core.teachers import PairGraphConfig, make_pairs
from kd3d_core.teachers.preprocess import crop_geometry, default_label_size, preprocess_rgb


def test_pair_graph_window_loop_strides_complete():
    assert make_pairs(5, PairGraphConfig(window=2)) == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (2, 4), (3, 4)]
    loop = make_pairs(6, PairGraphConfig(window=1, loop=True))
    assert (0, 5) in loop and len(loop) == 6
    strided = make_pairs(20, PairGraphConfig(window=1, strides=(10,), stride_every=5))
    assert {(0, 10), (5, 15)} <= set(strided) and (1, 11) not in strided
    assert len(make_pairs(6, PairGraphConfig(complete=True))) == 15
    with pytest.raises(ConfigError, match="positive"):
        make_pairs(5, PairGraphConfig(window=0))


@pytest.mark.parametrize("wh, size, out", [((640, 480), 512, (512, 384)), ((640, 480), 224, (224, 224)),
                                           ((500, 500), 512, (512, 384)), ((1296, 968), 512, (512, 368)),
                                           ((480, 640), 512, (384, 512))])
def test_crop_sizes_match_dust3r(wh, size, out):
    g = crop_geometry(wh, size)
    assert g.output_wh == out and all(v % 16 == 0 for v in g.output_wh)
    img = preprocess_rgb(np.zeros((wh[1], wh[0], 3), np.uint8), g)
    assert img.shape == (out[1], out[0], 3)


def test_intrinsics_follow_resize_and_crop():
    K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    g = crop_geometry((640, 480), 224)
    K2 = g.intrinsics(K)
    # 640x480 -> 299x224 (scale 299/640, 224/480), then a centre crop starting at x = 149 - 112 = 37
    assert np.isclose(K2[0, 0], 500 * 299 / 640) and np.isclose(K2[1, 1], 500 * 224 / 480)
    assert np.isclose(K2[0, 2], (319.5 + 0.5) * 299 / 640 - 0.5 - 37) and np.isclose(K2[1, 2], 111.5)
    assert default_label_size((512, 384)) == (160, 120)
    with pytest.raises(ConfigError, match="224 or 512"):
        crop_geometry((640, 480), 300)
