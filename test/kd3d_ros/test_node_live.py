"""The relocalizer node live: its own process, started from the console script with the README's command line
(as `ros2 run` starts it), fed by a probe in the test process over real DDS (Fast DDS, a domain of its own,
localhost discovery), localizing with a real fast-student model of a tiny synthetic room.

Set KD3D_LIVE_REPORT=/path/figures.json to keep the measured figures (frames in / poses out, latency, accuracy,
NEES of the published covariance), and KD3D_LIVE_NODE_ARGS to add node arguments for a measurement (e.g.
"-p covariance_inflation:=1.0" for the NEES of the uninflated covariance).
"""
from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

rclpy = pytest.importorskip("rclpy", reason="ROS 2 rclpy is not installed (scripts/setup_env.sh installs it)")

from live_graph import (  # noqa: E402 - after the import check
    CAMERA_FRAME,
    CONFIG,
    DOMAIN_ID,
    NodeProcess,
    Probe,
    documented_node_command,
    latencies_ms,
    ros_environment,
    set_stamp,
    stamp_ns,
)

from kd3d_core.geometry import pose_error  # noqa: E402
from kd3d_core.messages import (  # noqa: E402
    ModuleFactory,
    build_camera_info,
    build_compressed_image,
    build_image,
    covariance_to_matrix,
    encode_compressed_rgb,
    pose_to_matrix,
    rgb_to_image_fields,
)

FACTORY = ModuleFactory()
FIGURES: dict = {}
NODE_TEST_PARAMS = ["-p", "publish_tf:=false", "-p", "device:=cpu", "-p", "diagnostics_period:=0.25",
                    *os.environ.get("KD3D_LIVE_NODE_ARGS", "").split()]


def _camera_messages(room, compressed: bool = False) -> list[tuple]:
    out = []
    for frame in room.frames:
        if compressed:
            image = build_compressed_image(*encode_compressed_rgb(frame.rgb, "jpeg", 90), 0, CAMERA_FRAME, FACTORY)
        else:
            image = build_image(rgb_to_image_fields(frame.rgb), 0, CAMERA_FRAME, FACTORY)
        out.append((image, build_camera_info(frame.camera, 0, CAMERA_FRAME, FACTORY)))
    return out


def _start(args: list[str], log) -> tuple[NodeProcess, Probe]:
    node = NodeProcess(args, log)
    probe = Probe(rclpy, compressed="compressed:=true" in args)
    try:
        probe.wait_for(lambda: probe.image_pub.get_subscription_count() > 0
                       and probe.node.count_publishers("/relocalizer/pose") > 0, 120, "the node to come up", node)
    except BaseException:
        probe.close()
        node.stop()
        raise
    return node, probe


def _warm_up(probe: Probe, node: NodeProcess, messages: list[tuple]) -> dict:
    """Send the first frame (new stamps) until the node processed one: discovery and first inference done."""
    image, info = messages[0]
    deadline = time.monotonic() + 60
    while not probe.diagnostics() or int(probe.diagnostics()["frames_processed"]) == 0:
        node.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"the node processed no frame in 60 s:\n{node.output()[-2000:]}")
        probe.send(image, info, time.time_ns())
        time.sleep(0.3)
    return probe.diagnostics()


def _settle(probe: Probe, before_processed: int, expect_more: bool = True) -> dict:
    """Diagnostics once frames_processed stopped changing (everything sent was processed or dropped)."""
    last, stable_since = -1, time.monotonic()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        processed = int(probe.diagnostics()["frames_processed"])
        if processed != last:
            last, stable_since = processed, time.monotonic()
        elif time.monotonic() - stable_since > 1.2 and (processed > before_processed or not expect_more):
            break
        time.sleep(0.05)
    time.sleep(0.3)  # outputs of the last frame
    return probe.diagnostics()


def _delta(after: dict, before: dict, key: str) -> int:
    return int(after[key]) - int(before[key])


def _nees(est, cov, truth) -> tuple[float, float]:
    """(position, rotation) NEES of one published pose: e^T P^-1 e with e = (t_est - t_true,
    rotvec(R_est R_true^T)), the order of the message's covariance (x y z, rotation about x y z)."""
    e_t = est[:3, 3] - truth[:3, 3]
    e_r = Rotation.from_matrix(est[:3, :3] @ truth[:3, :3].T).as_rotvec()
    return float(e_t @ np.linalg.solve(cov[:3, :3], e_t)), float(e_r @ np.linalg.solve(cov[3:, 3:], e_r))


def _accuracy(probe: Probe, truth: dict[int, np.ndarray]) -> dict:
    errors, nees = [], []
    for r in probe.messages("cov"):
        ns = stamp_ns(r.msg)
        if ns in truth:
            est = pose_to_matrix(r.msg.pose.pose)
            err = pose_error(est, truth[ns])
            errors.append((err.translation_m, err.rotation_deg))
            nees.append(_nees(est, covariance_to_matrix(r.msg), truth[ns]))
    errors, nees = np.asarray(errors), np.asarray(nees)
    return {"localized": len(errors), "median_translation_cm": float(np.median(errors[:, 0]) * 100),
            "median_rotation_deg": float(np.median(errors[:, 1])),
            "within_5cm_5deg": float(np.mean((errors[:, 0] < 0.05) & (errors[:, 1] < 5))),
            "nees_position_mean": float(np.mean(nees[:, 0])), "nees_rotation_mean": float(np.mean(nees[:, 1])),
            "nees_position_median": float(np.median(nees[:, 0])),
            "nees_rotation_median": float(np.median(nees[:, 1]))}


# The fastest pace the probe publishes a camera stream at (a fast node's three times capacity can be beyond it).
MAX_STREAM_HZ = 200.0


def _stream(probe: Probe, messages: list[tuple], rate_hz: float, seconds: float, truth: dict, frames) -> int:
    """Publish the query frames in a loop at `rate_hz` for `seconds`, stamped with the wall clock."""
    period, sent, start = 1.0 / rate_hz, 0, time.monotonic()
    while time.monotonic() - start < seconds:
        i = sent % len(messages)
        ns = time.time_ns()
        truth[ns] = frames[i].world_T_cam
        probe.send(*messages[i], ns)
        sent += 1
        time.sleep(max(0.0, start + sent * period - time.monotonic()))
    return sent


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    if os.environ.get("KD3D_LIVE_REPORT") and FIGURES:
        path = os.environ["KD3D_LIVE_REPORT"]
        with open(path + ".tmp", "w") as f:
            json.dump(FIGURES, f, indent=2)
        os.replace(path + ".tmp", path)


# --------------------------------------------------------------------------------- raw images, README command
@pytest.fixture(scope="module")
def raw(live_room, tmp_path_factory):
    """The node started with the README's command line (model path substituted) plus test parameters."""
    args = [a.replace("$PWD/room.kd3d", str(live_room.model_path)) for a in documented_node_command()]
    node, probe = _start(args + NODE_TEST_PARAMS, tmp_path_factory.mktemp("raw") / "node.log")
    _warm_up(probe, node, _camera_messages(live_room))
    yield node, probe
    probe.close()
    node.stop()


def test_each_localized_frame_gives_one_cloud_pose_and_covariance_with_its_stamp(raw, live_room):
    node, probe = raw
    messages = _camera_messages(live_room)
    before = _settle(probe, 0, expect_more=False)
    n_pose = len(probe.messages("pose"))
    truth, sent = {}, []
    for _round in range(2):
        for (image, info), frame in zip(messages, live_room.frames):
            ns = time.time_ns()
            truth[ns] = frame.world_T_cam
            probe.send(image, info, ns)
            sent.append(ns)
            time.sleep(0.35)
    after = _settle(probe, int(before["frames_processed"]))
    poses = [r.msg for r in probe.messages("pose")[n_pose:]]
    stamps = [stamp_ns(m) for m in poses]
    assert len(stamps) == len(set(stamps)) and set(stamps) <= set(sent)  # one pose per frame, the input's stamp
    assert all(m.header.frame_id == "map" for m in poses)
    for key in ("cov", "cloud"):
        got = [r.msg for r in probe.messages(key) if stamp_ns(r.msg) in truth]
        assert sorted(stamp_ns(m) for m in got) == sorted(stamps), key
        assert all(m.header.frame_id == "map" for m in got)
    assert len(poses) == _delta(after, before, "frames_localized")
    accuracy = _accuracy(probe, truth)
    FIGURES["raw_slow"] = {"frames_sent": len(sent), "frames_received": _delta(after, before, "frames_received"),
                           "frames_processed": _delta(after, before, "frames_processed"), "poses_out": len(poses),
                           **accuracy}
    assert len(poses) >= 10, FIGURES["raw_slow"]
    # A 128x96 room mapped from 24 views: a few cm (8 cm / 3.8 deg measured); a frame or axis mix-up is metres off.
    assert accuracy["median_translation_cm"] < 15 and accuracy["median_rotation_deg"] < 8, accuracy


@pytest.mark.parametrize("rate_hz", [10.0, 30.0])
def test_rate_limit_and_latency_at_camera_rates(raw, live_room, rate_hz):
    """max_rate 10 (config/relocalizer.yaml): a 10 Hz camera is not thinned, a 30 Hz one is thinned to about
    10 Hz by stamps, and latency stays about one inference (newest frame wins)."""
    node, probe = raw
    messages = _camera_messages(live_room)
    before = _settle(probe, 0, expect_more=False)
    n_pose = len(probe.messages("pose"))
    truth = {}
    sent = _stream(probe, messages, rate_hz, 4.0, truth, live_room.frames)
    after = _settle(probe, int(before["frames_processed"]))
    received = _delta(after, before, "frames_received")
    skipped = _delta(after, before, "frames_skipped_rate_limit")
    lat = latencies_ms(probe, stamps=set(truth))
    figures = {"frames_sent": sent, "frames_received": received, "skipped_rate_limit": skipped,
               "dropped_busy": _delta(after, before, "frames_dropped"),
               "frames_processed": _delta(after, before, "frames_processed"),
               "poses_out": len(probe.messages("pose")) - n_pose,
               "latency_ms_p50": float(np.percentile(lat, 50)), "latency_ms_p90": float(np.percentile(lat, 90)),
               "predict_ms_mean": float(after["latency_predict_ms_mean"])}
    FIGURES[f"stream_{rate_hz:.0f}hz"] = figures
    # Small raw frames arrive; on a loaded 2-core CPU the node's executor misses some at 30 Hz (depth-1 sensor QoS:
    # one CI run received 59 of 120 while the worker localized). The exact rate the limiter lets through is tested
    # deterministically with jittered stamps (test_runtime.test_rate_limiter_delivers_max_rate_under_jitter); live,
    # we require that frames flow, that the limiter lets a good part of max_rate through, and never more.
    assert received >= 0.3 * sent, figures
    passed = received - skipped
    assert passed >= min(received, 10.0 * 4.0) * 0.5, figures
    assert passed <= 10.0 * 4.0 * 1.15 + 2, figures  # the limiter never lets more than max_rate through
    assert figures["latency_ms_p90"] < 1500, figures


def test_input_loss_is_seen_in_diagnostics(raw, live_room):
    """CameraInfo for every frame, images for two in three: diagnostics count the missing third."""
    node, probe = raw
    messages = _camera_messages(live_room)
    before = _settle(probe, 0, expect_more=False)
    missing = 0
    for i in range(45):
        image, info = messages[i % len(messages)]
        ns = time.time_ns()
        if i % 3 == 1 and 0 < i < 44:  # the camera sent this frame, the network lost it
            probe.info_pub.publish(set_stamp(info, ns))
            missing += 1
        else:
            probe.send(image, info, ns)
        time.sleep(0.1)
    after = probe.wait_diagnostics(lambda d: int(d["frames_lost_before_node"]) > int(before["frames_lost_before_node"])
                                   + missing - 2, 10, "the lost frames in diagnostics")
    assert float(after["input_expected_hz"]) > 0 and "input_loss_percent" in after
    FIGURES["input_loss"] = {"withheld": missing, "frames_lost_before_node": int(after["frames_lost_before_node"])
                             - int(before["frames_lost_before_node"])}


def test_bad_messages_are_counted_and_survived(raw, live_room):
    from sensor_msgs.msg import Image

    node, probe = raw
    messages = _camera_messages(live_room)
    image, info = messages[0]
    before = _settle(probe, 0, expect_more=False)
    wrong_encoding = build_image(rgb_to_image_fields(live_room.frames[0].rgb), 0, CAMERA_FRAME, FACTORY)
    wrong_encoding.encoding = "yuv422_yuy2"
    truncated = build_image(rgb_to_image_fields(live_room.frames[0].rgb), 0, CAMERA_FRAME, FACTORY)
    truncated.data = bytes(truncated.data)[:100]
    small = build_image(rgb_to_image_fields(np.ascontiguousarray(live_room.frames[0].rgb[:48, :64])), 0,
                        CAMERA_FRAME, FACTORY)
    uncalibrated = build_camera_info(live_room.frames[0].camera, 0, CAMERA_FRAME, FACTORY)
    uncalibrated.k = [0.0] * 9
    cases = [(wrong_encoding, info), (Image(header=image.header), info), (truncated, info), (small, info),
             (image, uncalibrated)]
    for bad, bad_info in cases:
        probe.send(bad, bad_info, time.time_ns())
        time.sleep(0.3)
    probe.send(image, info, 0)  # stamped 0
    time.sleep(0.3)
    good = time.time_ns()
    probe.send(image, info, good)
    probe.wait_for(lambda: good in {stamp_ns(r.msg) for r in probe.messages("pose")}, 20, "a pose after bad input",
                   node)
    after = probe.wait_diagnostics(lambda d: _delta(d, before, "frames_localized") >= 1, 10, "diagnostics")
    counts = {k: int(after.get(k, 0)) - int(before.get(k, 0)) for k in after if k.startswith("problem_")}
    FIGURES["bad_messages"] = counts
    assert counts["problem_bad_image"] >= 3 and counts["problem_camera_info_mismatch"] >= 1, counts
    assert counts["problem_bad_camera_info"] >= 1 and counts["problem_zero_stamp"] >= 1, counts
    assert 0 not in {stamp_ns(r.msg) for r in probe.messages("pose")}
    node.check_alive()


def test_diagnostics_describe_the_node(raw, live_room):
    node, probe = raw
    diag = probe.wait_diagnostics(lambda d: int(d["frames_localized"]) > 0, 10, "diagnostics")
    assert diag["_name"] == "relocalizer: relocalization"
    assert diag["_hardware_id"] == CAMERA_FRAME  # the camera, not the model file
    assert diag["model_path"] == str(live_room.model_path) and diag["device"] == "cpu"
    for key in ("input_rate_hz", "localize_rate_hz", "input_expected_hz", "frames_lost_before_node",
                "latency_predict_ms_mean", "latency_pnp_ms_max", "inliers_mean"):
        assert key in diag, key
    assert float(diag["latency_predict_ms_mean"]) > 0 and float(diag["inliers_mean"]) >= 30


def test_relocalize_service_answers(raw, live_room):
    """~/relocalize (std_srvs/Trigger) waits for the next localized frame. Without tf2_ros (pip's ROS wheels)
    the base pose cannot be looked up, and the answer says so instead of hanging or crashing."""
    from std_srvs.srv import Trigger

    node, probe = raw
    client = probe.node.create_client(Trigger, "/relocalizer/relocalize")
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(Trigger.Request())
    image, info = _camera_messages(live_room)[2]
    deadline = time.monotonic() + 20
    while not future.done() and time.monotonic() < deadline:
        probe.send(image, info, time.time_ns())
        time.sleep(0.3)
    assert future.done(), "no answer from ~/relocalize"
    answer = future.result()
    try:
        import tf2_ros  # noqa: F401
    except ImportError:
        assert not answer.success and "tf2_ros" in answer.message, answer
    else:  # a full ROS install, but nobody publishes base_link -> camera here
        assert not answer.success and "no_base_tf" in answer.message, answer


def test_sigint_stops_the_node_cleanly(raw):
    node, _probe = raw
    code = node.stop()
    output = node.output()
    assert code == 0, output[-2000:]
    assert "Traceback" not in output and "localizing /camera/color/image_raw" in output


# --------------------------------------------------------------------------------- JPEG at 3x overload
@pytest.fixture(scope="module")
def jpeg(live_room, tmp_path_factory):
    args = ["--ros-args", "--params-file", str(CONFIG), "-p", f"model_path:={live_room.model_path}",
            "-p", "compressed:=true", "-p", "max_rate:=0.0", *NODE_TEST_PARAMS]
    node, probe = _start(args, tmp_path_factory.mktemp("jpeg") / "node.log")
    yield node, probe
    probe.close()
    node.stop()


def test_compressed_images_at_three_times_capacity_keep_latency_bounded(jpeg, live_room):
    node, probe = jpeg
    messages = _camera_messages(live_room, compressed=True)
    _warm_up(probe, node, messages)
    calibration = {}
    for i in range(4):  # the node's time per frame now, from send to pose, at a pace it keeps up with
        calibration[time.time_ns()] = None
        probe.send(*messages[i], max(calibration))
        time.sleep(0.5)
    before = _settle(probe, 0, expect_more=False)
    per_frame_ms = float(np.median(latencies_ms(probe, stamps=set(calibration))))
    rate_hz = min(MAX_STREAM_HZ, 3 * 1000.0 / per_frame_ms)  # three times what the node can do
    truth = {}
    sent = _stream(probe, messages, rate_hz, 4.0, truth, live_room.frames)
    rate_hz = sent / 4.0  # what the probe managed to send
    last_sent = time.monotonic()
    after = _settle(probe, int(before["frames_processed"]))
    outputs = [r for r in probe.messages("pose") if stamp_ns(r.msg) in truth]
    lat = latencies_ms(probe, stamps=set(truth))
    processed = _delta(after, before, "frames_processed")
    figures = {"input_hz": rate_hz, "per_frame_ms_at_1_hz": per_frame_ms, "frames_sent": sent,
               "frames_received": _delta(after, before, "frames_received"), "frames_processed": processed,
               "dropped_busy": _delta(after, before, "frames_dropped"), "poses_out": len(outputs),
               "latency_ms_p50": float(np.percentile(lat, 50)), "latency_ms_p90": float(np.percentile(lat, 90)),
               **_accuracy(probe, truth)}
    FIGURES["jpeg_overload_3x"] = figures
    # Busy, the node runs faster than at 2 Hz (warm caches), so at three times its measured pace it takes about half
    # the frames, not a third. The pace is capped (MAX_STREAM_HZ): a faster node sees less than three times its load
    # (at the former 60 Hz cap, 25.6 ms a frame: 1.5x, and 151 of 198 frames taken; 15.4 ms a frame: 0.9x, and it
    # kept up with every frame), and has to drop frames only once the stream outpaces it by half.
    overload = rate_hz * per_frame_ms / 1000.0
    figures["overload"] = overload
    if overload >= 1.5:
        assert figures["dropped_busy"] > 0 and processed < figures["frames_received"], figures
    if overload >= 2.5:
        assert processed < 0.75 * figures["frames_received"], figures
    stamps = [stamp_ns(r.msg) for r in outputs]
    assert len(stamps) == len(set(stamps))
    # Newest frame wins: latency stays a couple of inferences; a queue would grow to seconds over 4 s.
    assert figures["latency_ms_p90"] < 4 * per_frame_ms + 500, figures
    assert max(r.t for r in outputs) - last_sent < 2.0, figures  # nothing left over once the camera stops
    assert figures["median_translation_cm"] < 15, figures


def test_sigterm_while_busy_stops_the_node_cleanly(jpeg, live_room):
    """SIGTERM (what `ros2 launch` sends after SIGINT) arrives while frames stream in faster than the node runs:
    the worker finishes its frame and stops before the context goes down, and the process exits 0."""
    node, probe = jpeg
    messages = _camera_messages(live_room, compressed=True)
    for i in range(6):
        probe.send(*messages[i % len(messages)], time.time_ns())
        time.sleep(0.05)
    node.check_alive()
    code = node.stop(sig=signal.SIGTERM)
    output = node.output()
    assert code == 0, output[-2000:]
    assert "Traceback" not in output, output[-2000:]


# --------------------------------------------------------------------------------- managed node
def test_lifecycle_node_is_driven_through_its_lifecycle_services(live_room, tmp_path):
    """What nav2's lifecycle manager does: configure (model loads), activate (camera subscribed), deactivate."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    args = ["--ros-args", "--params-file", str(CONFIG), "-p", f"model_path:={live_room.model_path}",
            *NODE_TEST_PARAMS]
    domain = (DOMAIN_ID + 1) % 233  # the module's other nodes may still be up in DOMAIN_ID
    node = NodeProcess(args, tmp_path / "node.log", env=ros_environment(domain), script="relocalizer_lifecycle_node")
    probe = Probe(rclpy, domain_id=domain)
    try:
        change = probe.node.create_client(ChangeState, "/relocalizer/change_state")
        get = probe.node.create_client(GetState, "/relocalizer/get_state")
        probe.wait_for(lambda: change.service_is_ready() and get.service_is_ready(), 120, "lifecycle services", node)

        def call(client, request):
            future = client.call_async(request)
            probe.wait_for(future.done, 60, f"{client.srv_name}", node)
            return future.result()

        def transition(tid: int) -> None:
            assert call(change, ChangeState.Request(transition=Transition(id=tid))).success, node.output()[-2000:]

        assert call(get, GetState.Request()).current_state.label == "unconfigured"
        transition(Transition.TRANSITION_CONFIGURE)
        assert call(get, GetState.Request()).current_state.label == "inactive"
        assert probe.image_pub.get_subscription_count() == 0
        transition(Transition.TRANSITION_ACTIVATE)
        probe.wait_for(lambda: probe.image_pub.get_subscription_count() > 0, 20, "the camera subscription", node)
        messages = _camera_messages(live_room)
        deadline = time.monotonic() + 60
        while not probe.messages("pose"):  # the first frames may go before CameraInfo or discovery
            node.check_alive()
            assert time.monotonic() < deadline, f"no pose from the active node:\n{node.output()[-2000:]}"
            probe.send(*messages[1], time.time_ns())
            time.sleep(0.3)
        transition(Transition.TRANSITION_DEACTIVATE)
        probe.wait_for(lambda: probe.image_pub.get_subscription_count() == 0, 20, "unsubscribing", node)
        assert call(get, GetState.Request()).current_state.label == "inactive"
    finally:
        probe.close()
        code = node.stop()
    assert code == 0 and "Traceback" not in node.output()


# --------------------------------------------------------------------------------- start-up errors
def test_publish_tf_without_tf2_ros_is_one_fatal_line(live_room, tmp_path):
    try:
        import tf2_ros  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tf2_ros is installed here: publish_tf works (see test_relocalizer_node_ros.py)")
    args = ["--ros-args", "--params-file", str(CONFIG), "-p", f"model_path:={live_room.model_path}",
            "-p", "device:=cpu"]  # the file's publish_tf: true
    node = NodeProcess(args, tmp_path / "node.log")
    node.proc.wait(120)
    output = node.output()
    node.stop()
    assert node.proc.returncode == 1
    fatal = [line for line in output.splitlines() if "FATAL" in line]
    assert len(fatal) == 1 and "publish_tf:=true needs tf2_ros" in fatal[0], output
    assert "Traceback" not in output
