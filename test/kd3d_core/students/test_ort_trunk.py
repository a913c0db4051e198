"""The fast encoder's convolutions on ONNX Runtime: same features as PyTorch, backend choice, exports untouched."""
import numpy as np
import pytest
import torch
from fast_cases import save_small_fast

from kd3d_core.errors import ConfigError
from kd3d_core.students.fast import FastConfig, FastEncoder
from kd3d_core.students.ort_trunk import ENV_VAR, EncoderBackend, OrtTrunk, requested_backend, resolve_backend
from kd3d_core.students.scene_model import load_scene_model

CPU = torch.device("cpu")


def _encoder() -> FastEncoder:
    torch.manual_seed(0)
    return FastEncoder(FastConfig()).eval()  # the default encoder, as model files ship it


def test_onnxruntime_computes_the_pytorch_features():
    encoder = _encoder()
    runner = OrtTrunk(encoder)
    x = encoder.normalise(torch.randn(2, 3, 48, 64))  # a batch of 2: the batch axis is dynamic
    with torch.inference_mode():  # as predict() calls it (the export must step out of inference mode)
        got = runner(x)
        want = encoder.trunk(x)
    assert got.shape == want.shape == (2, 256, 6, 8)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4 * float(want.abs().max()))
    assert not torch.equal(got, torch.zeros_like(got))


def test_forward_uses_the_runner_but_traces_pytorch():
    encoder = _encoder()
    calls = []

    def runner(x):
        calls.append(x.shape)
        return encoder.trunk(x)

    encoder.trunk_runner = runner
    image = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        direct = encoder(image)
        assert len(calls) == 1
        traced = torch.jit.trace(encoder, image, check_trace=False)
        assert len(calls) == 1  # tracing ran the PyTorch modules, not the runner
        np.testing.assert_allclose(traced(image).numpy(), direct.numpy(), atol=1e-5)


def test_auto_leaves_multi_threaded_calls_to_pytorch():
    encoder = _encoder()
    runner = OrtTrunk(encoder, single_thread_only=True)
    x = encoder.normalise(torch.randn(1, 3, 48, 64))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        runner.prepare((48, 64))
        with torch.no_grad():
            out = runner(x)
        assert runner._sessions == {}  # no session was built or used
        torch.set_num_threads(1)
        with torch.no_grad():
            np.testing.assert_allclose(runner(x).numpy(), out.numpy(), atol=1e-4 * float(out.abs().max()))
        assert len(runner._sessions) == 1
    finally:
        torch.set_num_threads(threads)


def test_backend_choice(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert requested_backend(None) is EncoderBackend.AUTO
    assert resolve_backend(None, CPU) is EncoderBackend.ONNXRUNTIME  # onnxruntime is installed here
    assert resolve_backend("torch", CPU) is EncoderBackend.TORCH
    assert resolve_backend("auto", torch.device("cuda")) is EncoderBackend.TORCH
    monkeypatch.setenv(ENV_VAR, "torch")
    assert resolve_backend(None, CPU) is EncoderBackend.TORCH
    monkeypatch.setenv(ENV_VAR, "tensorrt")
    with pytest.raises(ConfigError, match=f"{ENV_VAR} must be one of auto, torch, onnxruntime, got 'tensorrt'"):
        resolve_backend(None, CPU)
    with pytest.raises(ConfigError, match="encoder backend must be one of"):
        resolve_backend("tensorrt", CPU)
    with pytest.raises(ConfigError, match="runs on the CPU"):
        resolve_backend("onnxruntime", torch.device("cuda"))
    monkeypatch.setattr("kd3d_core.students.ort_trunk.onnxruntime_available", lambda: False)
    assert resolve_backend("auto", CPU) is EncoderBackend.TORCH
    with pytest.raises(ConfigError, match="needs the onnxruntime and onnx packages"):
        resolve_backend("onnxruntime", CPU)


def test_scene_models_predict_the_same_on_both_backends(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    _, path = save_small_fast(tmp_path)
    on_torch = load_scene_model(path, "cpu", "torch")
    on_ort = load_scene_model(path, "cpu")
    assert on_torch.encoder_backend is EncoderBackend.TORCH and on_ort.encoder_backend is EncoderBackend.ONNXRUNTIME
    assert (on_torch.encoder_runtime, on_ort.encoder_runtime) == ("torch", "onnxruntime")  # tests run 1 thread
    rgb = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    a, b = on_torch.predict(rgb), on_ort.predict(rgb)
    np.testing.assert_allclose(b.points_hw3, a.points_hw3, atol=1e-4)
    np.testing.assert_allclose(b.conf_hw, a.conf_hw, atol=1e-5)
    with pytest.raises(ConfigError, match="encoder backend"):
        load_scene_model(tmp_path / "missing.kd3d", "cpu", "gpu")  # the choice is checked before the file


@pytest.mark.parametrize("single_thread_only", [True, False])
def test_a_graph_that_cannot_be_built_falls_back_only_under_auto(monkeypatch, single_thread_only):
    encoder = _encoder()
    runner = OrtTrunk(encoder, single_thread_only=single_thread_only)

    def broken(key):
        raise RuntimeError("exporter cannot handle this torch")

    monkeypatch.setattr(runner, "_build", broken)
    x = encoder.normalise(torch.randn(1, 3, 48, 64))
    with torch.no_grad():
        if not single_thread_only:  # "onnxruntime" asked for: the error is the user's to see
            with pytest.raises(RuntimeError, match="exporter"):
                runner(x)
            return
        runner.prepare((48, 64))
        assert runner.failed == "RuntimeError: exporter cannot handle this torch" and runner.torch_instead()
        np.testing.assert_array_equal(runner(x).numpy(), encoder.trunk(x).numpy())
