"""Frame intake (newest-wins mailbox, rate limit), failure log throttling and diagnostics, without ROS."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from kd3d_core.messages import build_image, rgb_to_image_fields, ros2_typestore
from kd3d_ros.runtime import DiagLevel, FailureLog, Intake, LatestSlot, NodeStats, RateLimiter, build_diagnostic_array


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
    limiter = RateLimiter(10.0)  # 100 ms of image time between frames
    stamps = [0, 30_000_000, 99_000_000, 100_000_000, 150_000_000, 230_000_000]
    assert [limiter.accept(s) for s in stamps] == [True, False, False, True, False, True]
    assert limiter.accept(5_000_000) is True  # time went backwards (bag loop): restart, don't stall
    unlimited = RateLimiter(0.0)
    assert all(unlimited.accept(s) for s in (1, 1, 2, 2))


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
    for stamp in (0, 50_000_000, 100_000_000, 200_000_000):
        intake.offer(_image(stamp))
    assert (stats.received, stats.skipped_rate, stats.dropped) == (4, 1, 2)
    newest = intake.take(timeout=0)
    assert newest.header.stamp.nanosec == 200_000_000
    intake.offer(object())  # no header: passes through so the pipeline reports it
    assert isinstance(intake.take(timeout=0), object) and stats.received == 5
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
