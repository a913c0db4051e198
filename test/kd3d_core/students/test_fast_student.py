"""The fast student: module contract, cell alignment, registry, model-file round trip."""
import numpy as np
import pytest
import torch
from fast_cases import SMALL, save_small_fast

from kd3d_core.errors import ConfigError
from kd3d_core.students import get_architecture
from kd3d_core.students.fast import FastConfig, FastEncoder, FastHead, local_contrast_normalise
from kd3d_core.students.registry import cell_centres, config_from_dict, config_to_dict
from kd3d_core.students.scene_model import load_scene_model



def test_forward_contract_shapes_and_confidence_range():
    net = get_architecture("fast").build(SMALL, (64, 48))
    points, conf = net(torch.randn(2, 3, 48, 64))
    assert points.shape == (2, 3, 6, 8) and conf.shape == (2, 6, 8)
    assert net.output_stride == 8
    assert float(conf.detach().min()) >= 0.0 and float(conf.detach().max()) <= 1.0


def test_receptive_field_is_centred_on_the_registry_cell_centre():
    """Cell (i, j) must look at pixel (8 j + 4, 8 i + 4), where the relocalizer puts its 2D point."""
    enc = FastEncoder(FastConfig(stem_channels=(4, 4, 4), block_dilations=(), feature_dim=4, knn_dim=4, knn_pq=0,
                                 input_norm="none"))
    with torch.no_grad():
        for p in enc.parameters():
            p.fill_(0.05) if p.ndim > 1 else p.zero_()
    image = torch.rand(1, 3, 96, 96, requires_grad=True)
    enc(image)[0, :, 5, 6].sum().backward()
    g = image.grad.abs().sum(1)[0]
    vs, us = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    centre = cell_centres((96, 96), 8)[5, 6]
    assert float((g * us).sum() / g.sum()) == pytest.approx(centre[0], abs=1e-3)
    assert float((g * vs).sum() / g.sum()) == pytest.approx(centre[1], abs=1e-3)


def test_local_contrast_normalisation_is_centred_exact_and_cancels_gain_and_offset():
    x = torch.rand(1, 3, 37, 53) * 2 - 1
    out = local_contrast_normalise(x, 15, 1e-3)
    # Same as a plain window x window average pool that ignores the padding (the definition).
    mean = torch.nn.functional.avg_pool2d(x, 15, 1, 7, count_include_pad=False)
    var = torch.nn.functional.avg_pool2d(x * x, 15, 1, 7, count_include_pad=False) - mean ** 2
    assert torch.allclose(out, (x - mean) / torch.sqrt(var.clamp(min=0) + 1e-6), atol=1e-4)
    # Centred: mirroring the image mirrors the result.
    assert torch.allclose(local_contrast_normalise(x.flip(-1), 15, 1e-3), out.flip(-1), atol=1e-4)
    # A per-channel gain and offset (exposure, white balance) change nothing where there is texture.
    gain = torch.tensor([0.5, 1.3, 0.8]).view(1, 3, 1, 1)
    assert torch.allclose(local_contrast_normalise(x * gain + 0.2, 15, 1e-3), out, atol=1e-2)


def test_the_encoder_keeps_lcn_box_sizes_per_input_size():
    """The box sizes LCN divides by are kept per input size: alternating sizes gives what fresh encoders give."""
    torch.manual_seed(0)
    enc = FastEncoder(FastConfig(stem_channels=(4, 4, 8), block_dilations=(1,), feature_dim=8, knn_dim=8, knn_pq=0))
    fresh = FastEncoder(FastConfig(stem_channels=(4, 4, 8), block_dilations=(1,), feature_dim=8, knn_dim=8, knn_pq=0))
    fresh.load_state_dict(enc.state_dict())
    a, b = torch.rand(1, 3, 48, 64), torch.rand(1, 3, 40, 32)
    with torch.no_grad():
        outs = [enc(x) for x in (a, b, a, b)]
        fresh._counts.clear()
        want_b = fresh(b)
    assert torch.equal(outs[0], outs[2]) and torch.equal(outs[1], outs[3]) and torch.allclose(outs[1], want_b)
    assert len(enc._counts) == 2


def test_relative_lcn_floor_cancels_a_global_gain_in_flat_regions_too():
    """With lcn_relative the variance floor scales with the image's contrast: a global gain changes nothing, even
    where the texture is fainter than the absolute floor (which a fixed lcn_eps would flatten differently)."""
    x = torch.rand(1, 3, 64, 64) * 0.05
    x[..., 20:40, 20:40] += torch.rand(1, 3, 20, 20)
    for relative, expect_same in ((True, True), (False, False)):
        torch.manual_seed(0)
        enc = FastEncoder(FastConfig(lcn_relative=relative, lcn_eps=0.1, lcn_blur=False)).eval()
        with torch.no_grad():
            same = torch.allclose(enc(x), enc(0.3 * x), atol=1e-3, rtol=1e-3)
        assert same == expect_same


def test_model_files_without_later_options_mean_the_old_behaviour():
    """A model file written before lcn_relative existed loads with it off (not with whatever the default is)."""
    data = config_to_dict(FastConfig())
    del data["lcn_relative"]
    assert config_from_dict(FastConfig, data).lcn_relative is False
    with pytest.raises(ConfigError, match="missing"):
        config_from_dict(FastConfig, {k: v for k, v in data.items() if k != "lcn_eps"})


def test_added_later_applies_to_files_not_to_cli_options():
    """ADDED_LATER fills a file's missing option with its old meaning; partial (CLI) configs keep the default."""
    import dataclasses as dc
    from typing import ClassVar

    @dc.dataclass(frozen=True)
    class Cfg:
        width: int = 8
        smooth: bool = True
        ADDED_LATER: ClassVar[dict] = {"smooth": False}

    assert config_from_dict(Cfg, {"width": 4}) == Cfg(4, False)
    assert config_from_dict(Cfg, {"width": 4}, partial=True) == Cfg(4, True)


def test_the_encoder_sees_through_a_global_gain_only_with_lcn():
    x = torch.rand(1, 3, 64, 64)
    for norm, expect_same in (("lcn", True), ("none", False)):
        torch.manual_seed(0)
        enc = FastEncoder(FastConfig(input_norm=norm, lcn_eps=1e-3)).eval()
        with torch.no_grad():
            a, b = enc(x), enc(x * 0.5)
        rel = float((a - b).norm() / a.norm())
        assert (rel < 0.02) == expect_same, (norm, rel)


@pytest.mark.parametrize("homogeneous", [True, False])
def test_head_flat_and_map_forms_agree(homogeneous):
    cfg = FastConfig(feature_dim=16, head_width=16, head_blocks=2, homogeneous=homogeneous, knn_dim=8, knn_pq=0)
    head = FastHead(cfg)
    feats = torch.randn(1, 16, 3, 5)
    points, logits = head(feats)
    flat_points, flat_logits = head.forward_flat(feats.permute(0, 2, 3, 1).reshape(-1, 16))
    assert torch.allclose(points.permute(0, 2, 3, 1).reshape(-1, 3), flat_points, atol=1e-6)
    assert torch.allclose(logits.reshape(-1), flat_logits, atol=1e-6)


def test_homogeneous_output_stays_within_scale_bounds():
    head = FastHead(FastConfig(feature_dim=8, head_width=8, head_blocks=0, knn_dim=8, knn_pq=0))
    with torch.no_grad():
        head.out.weight.zero_()
        head.out.bias.copy_(torch.tensor([1.0, 0.0, 0.0, -100.0, 0.0]))  # w -> its minimum 1/MAX_SCALE
    points, _ = head.forward_flat(torch.zeros(4, 8))
    assert torch.allclose(points[:, 0], torch.full((4,), FastHead.MAX_SCALE), rtol=1e-4)


def test_config_round_trip_and_validation():
    d = config_to_dict(SMALL)
    assert config_from_dict(FastConfig, d) == SMALL
    with pytest.raises(ConfigError, match="stem_channels"):
        FastConfig(stem_channels=(8, 8))
    with pytest.raises(ConfigError, match="dilations"):
        FastConfig(block_dilations=(1, 0))
    with pytest.raises(ConfigError, match="knn_dim"):
        FastConfig(feature_dim=16, knn_dim=32)
    with pytest.raises(ConfigError, match="head must be one of"):
        FastConfig(head="tree")
    with pytest.raises(ConfigError, match="multiples of the output stride"):
        get_architecture("fast").build(SMALL, (60, 48))


def test_registered_with_its_own_trainer():
    arch = get_architecture("fast")
    assert arch.trainer == "fast" and arch.config_cls is FastConfig


def test_model_file_round_trip_predicts_the_same(tmp_path):
    net, path = save_small_fast(tmp_path)
    model = load_scene_model(path, "cpu")
    rgb = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    pred = model.predict(rgb)
    assert pred.points_hw3.shape == (6, 8, 3) and pred.uv_hw2.shape == (6, 8, 2)
    # Cell (0, 0) is network pixel (4, 4) -> input pixel (4.5 * 2 - 0.5) = 8.5 in a 2x larger image.
    assert pred.uv_hw2[0, 0].tolist() == pytest.approx([8.5, 8.5])
    x = torch.from_numpy(np.ascontiguousarray(
        __import__("cv2").resize(rgb, (64, 48), interpolation=__import__("cv2").INTER_AREA))).float()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    with torch.no_grad():
        ref, _ = net(((x.permute(2, 0, 1) / 255 - mean) / std)[None])
    expect = ref[0].permute(1, 2, 0).numpy() + np.array([1.0, 2.0, 0.5])
    np.testing.assert_allclose(pred.points_hw3, expect, atol=1e-4)


@pytest.mark.parametrize("pq", [0, 4])
def test_knn_memory_is_stored_compactly_and_decodes_close_to_what_was_stored(pq):
    from kd3d_core.students.fast import KnnHead

    cfg = FastConfig(feature_dim=16, knn_dim=16, knn_size=3000, knn_lists=4, knn_probe=0, knn_pq=pq)
    head = KnnHead(cfg)
    gen = torch.Generator().manual_seed(0)
    basis = torch.randn(16, 16, generator=gen) * torch.linspace(2, 0.1, 16)  # PCA-like decaying spectrum
    keys = torch.nn.functional.normalize(torch.randn(3000, 16, generator=gen) @ basis, dim=-1)
    points = torch.rand(3000, 3, generator=gen) * torch.tensor([6.0, 5.0, 2.8]) - 3
    head.store(keys, points, gen)
    assert head.keys.dtype == (torch.uint8 if pq else torch.int8)
    assert head.keys.shape == ((3000, pq) if pq else (3000, 16)) and head.points.dtype == torch.int16
    assert float((head._expanded("points") - points).abs().max()) < 1e-4  # 0.1 mm steps over 6 m
    cosine = (head._float_keys() * keys).sum(-1)
    assert float(cosine.mean()) > (0.99 if pq == 0 else 0.9)
    # Looking the stored keys up finds (almost always) their own points again.
    head.proj.copy_(torch.eye(16))
    found, _ = head.lookup(keys[:300])
    assert float(((found - points[:300]).norm(dim=-1) < 1e-3).float().mean()) > (0.99 if pq == 0 else 0.8)


def test_pq_must_divide_the_key_dimension():
    with pytest.raises(ConfigError, match="knn_pq"):
        FastConfig(knn_dim=64, knn_pq=7)


def test_binomial_blur_keeps_constants_and_halves_noise():
    from kd3d_core.students.fast import binomial_blur

    flat = torch.full((1, 3, 20, 30), 0.7)
    assert torch.allclose(binomial_blur(flat), flat, atol=1e-6)
    noise = torch.randn(1, 3, 200, 200, generator=torch.Generator().manual_seed(0))
    assert float(binomial_blur(noise).std()) < 0.5 * float(noise.std())
    step = torch.zeros(1, 1, 9, 9)
    step[..., 5:] = 1
    out = binomial_blur(step)
    assert out.shape == step.shape and float(out[0, 0, 4, 4]) == pytest.approx(5 / 16)


def test_inverted_file_search_finds_the_best_key_of_the_probed_lists():
    """The per-list scan: probing every list equals exhaustive search; probing some finds, per cell, the most
    similar key among its probed lists' keys (a plain reference); re-storing keys refreshes the list blocks; the
    scan shared with the helper thread (64 lists: 4 chunks) gives the same answers as the calling thread alone, and
    the NumPy scan (a CPU's) the same as the torch one."""
    from kd3d_core.training.fast import spherical_kmeans
    from kd3d_core.students.fast import KnnHead

    gen = torch.Generator().manual_seed(3)
    cfg = FastConfig(feature_dim=8, knn_dim=8, knn_size=2000, knn_lists=64, knn_probe=3, knn_pq=0)
    head = KnnHead(cfg)
    head.proj.copy_(torch.eye(8))

    def fill() -> None:
        keys = torch.nn.functional.normalize(torch.randn(2000, 8, generator=gen), dim=-1)
        centroids, assign = spherical_kmeans(keys, 64, gen)
        order = torch.argsort(assign)
        head.store(keys[order], torch.rand(2000, 3, generator=gen), gen)
        head.centroids.copy_(centroids)
        head.offsets.copy_(torch.cat([torch.zeros(1, dtype=torch.long),
                                      torch.bincount(assign, minlength=64).cumsum(0)]))

    fill()
    z = torch.nn.functional.normalize(torch.randn(300, 8, generator=gen), dim=-1)
    for _ in range(2):  # the second round runs on new keys: cached list blocks must not be reused
        keys = head._float_keys()
        sims = z @ keys.T
        head.probe = 64
        sim_all, idx_all = head._inverted(z)
        best_sim, best_idx = sims.max(dim=1)
        assert torch.equal(idx_all, best_idx) and torch.allclose(sim_all, best_sim, atol=1e-6)
        head.probe = 3
        sim_p, idx_p = head._inverted(z)
        probed = (z @ head.centroids.T).topk(3, dim=1).indices
        list_of_key = torch.bucketize(torch.arange(2000), head.offsets[1:], right=True)
        allowed = (list_of_key[None, :, None] == probed[:, None, :]).any(-1)  # (cells, keys)
        ref_sim, ref_idx = sims.masked_fill(~allowed, -2.0).max(dim=1)
        assert torch.equal(idx_p, ref_idx) and torch.allclose(sim_p, ref_sim, atol=1e-6)
        assert bool((sim_p <= sim_all + 1e-6).all()) and float((idx_p == idx_all).float().mean()) > 0.5
        head.share_scan = False  # the scan on the calling thread alone gives the very same answer
        alone = head._inverted(z)
        assert torch.equal(alone[0], sim_p) and torch.equal(alone[1], idx_p)
        cand_alone = head.candidates(z, 4)
        head.share_scan = True
        cand_shared = head.candidates(z, 4)
        # the same candidates; their similarities may differ in the last bit between the two threads' products
        assert torch.equal(cand_alone[0], cand_shared[0]) and torch.allclose(cand_alone[1], cand_shared[1], atol=1e-6)
        assert torch.allclose(cand_shared[1][:, 0], sim_p, atol=1e-6)  # the best candidate is the nearest neighbour
        head.numpy_scan = False  # the torch scan (GPU, autograd) finds the same keys
        on_torch = head._inverted(z)
        head.numpy_scan = True
        assert torch.equal(on_torch[1], idx_p) and torch.allclose(on_torch[0], sim_p, atol=1e-6)
        fill()


@pytest.mark.parametrize("blur,window,relative", [(True, 15, False), (False, 15, False), (True, 0, False),
                                                  (True, 9, True)])
def test_opencv_normalisation_matches_the_pytorch_ops_and_a_float64_reference(blur, window, relative):
    """The CPU path (OpenCV filters) and the traced path (PyTorch ops) compute the same normalisation."""
    from kd3d_core.students.fast import binomial_blur, box_counts, normalise_cv

    g = torch.Generator().manual_seed(0)
    x = (torch.rand(2, 3, 40, 56, generator=g) * 4 - 2).cumsum(-1) * 0.1  # smooth ramps plus texture
    x64 = binomial_blur(x.double()) if blur else x.double()
    floor = FastConfig().lcn_eps  # the encoder below runs with the default floor
    if window:
        eps = floor * x64.std(dim=(2, 3), keepdim=True).clamp(min=1e-3) if relative else floor
        ref = local_contrast_normalise(x64, window, eps, box_counts((40, 56), window, dtype=torch.float64))
    else:
        ref = x64
    counts = box_counts((40, 56), window) if window else None
    got = normalise_cv(x, blur, window, floor, relative, counts)
    assert got.dtype == torch.float32 and got.shape == x.shape
    assert torch.allclose(got.double(), ref, atol=2e-4)
    if not window:
        return  # blur alone is not an encoder setting (lcn_blur goes with LCN)
    enc = FastEncoder(FastConfig(lcn_window=window, lcn_blur=blur, lcn_relative=relative))
    with torch.no_grad():
        on_cpu = enc.normalise(x)  # the OpenCV path
    traced = torch.jit.trace_module(enc, {"normalise": x})  # tracing records the PyTorch ops
    assert torch.allclose(on_cpu, got) and torch.allclose(traced.normalise(x), on_cpu, atol=2e-4)
