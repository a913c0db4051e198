"""Frame intake (newest-wins mailbox, rate limit, input loss), failure log throttling and diagnostics, without ROS."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from kd3d_core.messages import build_image, rgb_to_image_fields, ros2_typestore
from kd3d_ros.input_stream import InputLossMeter, RateLimiter
from kd3d_ros.runtime import DiagLevel, FailureLog, Intake, LatestSlot, NodeStats, build_diagnostic_array


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _image(stamp_ns: int):
    return build_image(rgb_to_image_fields(np.zeros((8, 8, 3), np.uint8)), stamp_ns, "cam")


def test_latest_slot_keeps_only_the_newest():
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True  # 1 was never taken: dropped
    assert slot.take(timeout=0) == 2
    assert slot.take(timeout=0.01) is None


def test_latest_slot_wakes_a_waiting_worker_and_closes():
    slot: LatestSlot[str] = LatestSlot()
    got = []
    worker = threading.Thread(target=lambda: got.append(slot.take(timeout=5)))
    worker.start()
    time.sleep(0.05)
    slot.put("frame")
    worker.join(timeout=5)
    assert got == ["frame"]
    waiter = threading.Thread(target=lambda: got.append(slot.take(timeout=5)))
    waiter.start()
    slot.close()
    waiter.join(timeout=5)
    assert not waiter.is_alive() and got[-1] is None and slot.closed
    slot.put("late")
    assert slot.take(timeout=0) is None


def test_rate_limiter_uses_image_stamps():
    limiter = RateLimiter(10.0)  # 100 ms of image time per token
    stamps = [0, 30_000_000, 99_000_000, 100_000_000, 150_000_000, 230_000_000]
    assert [limiter.accept(s) for s in stamps] == [True, False, False, True, False, True]
    assert limiter.accept(5_000_000) is True  # time went backwards (bag loop): restart, don't stall
    unlimited = RateLimiter(0.0)
    assert all(unlimited.accept(s) for s in (1, 1, 2, 2))


def _jittered_stamps(rate_hz: float, seconds: float, jitter_s: float, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, seconds, 1.0 / rate_hz) + rng.uniform(-jitter_s, jitter_s, int(np.ceil(seconds * rate_hz)))
    return [int(s * 1e9) for s in np.sort(t) + 1.0]


@pytest.mark.parametrize("camera_hz, max_rate, expected_hz", [(10.0, 10.0, 10.0), (30.0, 10.0, 10.0),
                                                             (30.0, 30.0, 30.0), (10.0, 5.0, 5.0)])
def test_rate_limiter_delivers_max_rate_under_jitter(camera_hz, max_rate, expected_hz):
    """Stamp jitter of +-20 % of a frame: the delivered rate is max_rate (or the camera's), not less. The
    first limiter (`stamp < last + period`) measured 6.3 Hz from a 10 Hz camera and 8.3 Hz from a 30 Hz one."""
    stamps = _jittered_stamps(camera_hz, 20.0, 0.2 / camera_hz, seed=int(camera_hz * max_rate))
    limiter = RateLimiter(max_rate)
    accepted = [s for s in stamps if limiter.accept(s)]
    span_s = (stamps[-1] - stamps[0]) * 1e-9
    assert len(accepted) / span_s == pytest.approx(expected_hz, rel=0.03)
    gaps = np.diff(accepted) * 1e-9
    assert gaps.min() > 0 and np.sum(gaps < 0.5 / max_rate) <= 2  # no bursts beyond the bucket's one spare token


def test_input_loss_meter_counts_camera_info_stamps_no_image_carried():
    meter = InputLossMeter()
    period = 33_333_333
    stamps = [1_000_000_000 + i * period for i in range(60)]
    for s in stamps:
        meter.on_info(s)
    kept = [s for i, s in enumerate(stamps) if i % 4 != 1 or i == 57]  # 14 frames lost in transport
    for s in kept:
        meter.on_image(s)
    assert meter.expected_period_ns() == pytest.approx(period, abs=1)
    assert meter.lost() == (len(kept), 14)
    slow = InputLossMeter()  # rate changes do not matter when CameraInfo says what was sent
    for s in stamps[:10] + [stamps[9] + i * 10**8 for i in range(1, 10)]:
        slow.on_info(s)
        slow.on_image(s)
    assert slow.lost() == (19, 0)


def test_input_loss_meter_without_camera_info_uses_the_median_gap():
    period = 100_000_000
    stamps = [1_000_000_000 + i * period for i in range(30)]
    meter = InputLossMeter()
    for i, s in enumerate(stamps):
        if i % 3 != 2:
            meter.on_image(s)
    assert meter.lost() == (20, 9)  # one frame missing in each of 9 double gaps (the last frame lost is not seen)
    paused = InputLossMeter()
    for s in stamps[:10] + [s + 10**10 for s in stamps[10:20]]:  # a 10 s pause is not loss
        paused.on_image(s)
    assert paused.lost() == (20, 0)


def test_stats_warn_about_input_loss():
    stats = NodeStats()
    for i in range(40):
        stats.on_camera_info(1_000_000_000 + i * 100_000_000)
        if i % 2 == 0:
            stats.on_received(1_000_000_000 + i * 100_000_000)
    report = stats.report()
    values = dict(report.values)
    assert values["input_expected_hz"] == "10.00" and values["frames_lost_before_node"] == "19"
    assert report.level is DiagLevel.WARN and "input loss" in report.message


def test_failure_log_reports_first_then_throttles_per_cause():
    clock = FakeClock()
    log = FailureLog(throttle_s=10.0, clock=clock)
    assert log.record("no_camera_info") == 1
    assert log.record("no_camera_info") == 0
    assert log.record("bad_image") == 1  # another cause is not throttled by the first
    clock.t += 5
    assert log.record("no_camera_info") == 0
    clock.t += 6
    assert log.record("no_camera_info") == 3  # the two silent ones plus this one
    assert log.counts == {"no_camera_info": 4, "bad_image": 1} and log.total == 5


def test_intake_counts_rate_skips_and_drops():
    stats = NodeStats()
    intake = Intake(max_rate_hz=10.0, stats=stats)
    for stamp in (1, 50_000_000, 100_000_001, 200_000_001):
        intake.offer(_image(stamp))
    assert (stats.received, stats.skipped_rate, stats.dropped) == (4, 1, 2)
    newest = intake.take(timeout=0)
    assert newest.header.stamp.nanosec == 200_000_001
    intake.offer(_image(0))  # stamped 0: not rate-limited, so that the pipeline reports it
    assert intake.take(timeout=0).header.stamp.nanosec == 0 and stats.skipped_rate == 1
    intake.offer(object())  # no header: passes through so the pipeline reports it
    assert isinstance(intake.take(timeout=0), object) and stats.received == 6
    intake.close()
    assert intake.closed and intake.take(timeout=0) is None


def test_stats_report_levels_and_values():
    clock = FakeClock()
    stats = NodeStats(window_s=10.0, clock=clock)
    report = stats.report()
    assert report.level is DiagLevel.WARN and "no image" in report.message
    for i in range(5):
        clock.t += 0.1
        stats.on_received()
        stats.on_processed({"predict": 10.0 + i, "pnp": 2.0}, inliers=100, failure=None)
    report = stats.report()
    values = dict(report.values)
    assert report.level is DiagLevel.OK and "5 of 5" in report.message
    assert float(values["input_rate_hz"]) == pytest.approx(10.0, rel=1e-6)
    assert values["latency_predict_ms_mean"] == "12.0" and values["latency_predict_ms_max"] == "14.0"
    assert values["frames_localized"] == "5" and values["inliers_mean"] == "100.0"
    clock.t += 0.1
    stats.on_received()
    stats.on_processed({}, 0, "too_few_inliers")
    assert stats.on_problem("too_few_inliers", "12 inliers of 300") == "too_few_inliers: 12 inliers of 300"
    assert stats.on_problem("too_few_inliers", "again") is None
    report = stats.report()
    assert report.level is DiagLevel.WARN and "too_few_inliers" in report.message
    assert dict(report.values)["problem_too_few_inliers"] == "2"
    clock.t += 11
    assert "no image for more than 10 s" in stats.report().message


def test_stats_count_frames_recovered_by_the_second_chances():
    stats = NodeStats()
    values = dict(stats.report().values)
    assert values["frames_localized_by_guided"] == "0" and values["frames_localized_by_roll_retry"] == "0"
    assert values["frames_localized_by_zoom_retry"] == "0"
    stats.on_processed({}, 80, None, "guided")
    stats.on_processed({}, 90, None, "roll_retry")
    stats.on_processed({}, 95, None, "roll_retry")
    stats.on_processed({}, 70, None, "zoom_retry")
    stats.on_processed({}, 300, None)
    stats.on_processed({}, 12, "too_few_inliers", "guided")  # not localized: not a recovery
    values = dict(stats.report().values)
    assert values["frames_localized"] == "5"
    assert values["frames_localized_by_guided"] == "1" and values["frames_localized_by_roll_retry"] == "2"
    assert values["frames_localized_by_zoom_retry"] == "1"
    assert values["frames_turned_upright"] == "0"
    stats.on_processed({}, 120, None, "", turned_upright=True)
    stats.on_processed({}, 120, None, "roll_retry", turned_upright=True)
    stats.on_processed({}, 12, "too_few_inliers", "", turned_upright=True)  # not localized
    values = dict(stats.report().values)
    assert values["frames_turned_upright"] == "2" and values["frames_localized_by_roll_retry"] == "3"


def test_diagnostic_array_round_trips_through_cdr():
    store = ros2_typestore()
    stats = NodeStats()
    stats.on_received()
    stats.on_processed({"predict": 5.0}, 42, None)
    msg = build_diagnostic_array(stats.report(), 1_500_000_000, "relocalizer: relocalization", "room.kd3d", store)
    back = store.deserialize_cdr(store.serialize_cdr(msg, "diagnostic_msgs/msg/DiagnosticArray"),
                                 "diagnostic_msgs/msg/DiagnosticArray")
    status = back.status[0]
    assert back.header.stamp.sec == 1 and back.header.stamp.nanosec == 500_000_000
    assert status.level == 0 and status.name == "relocalizer: relocalization" and status.hardware_id == "room.kd3d"
    assert {kv.key: kv.value for kv in status.values}["inliers_mean"] == "42.0"
