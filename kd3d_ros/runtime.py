"""The relocalizer node's bookkeeping, free of rclpy so that it is tested without ROS.

- `LatestSlot`: a one-frame mailbox between the subscription callback and the worker thread. A new frame
  replaces an unprocessed one (counted as dropped), so a slow model never builds a queue.
- `Intake` combines the mailbox with kd3d_ros.input_stream's `RateLimiter` (at most `max_rate` localizations
  per second of *image time*, so replaying a bag at any speed gives the same frames) for the image callback;
  `NodeStats` counts input loss with its `InputLossMeter`.
- `FailureLog`: counts failures per cause and says when a cause should be logged (first time, then at most
  once per throttle period, with the count since).
- `NodeStats`: rates, per-stage latencies, inliers and failure counts over a sliding window, summarised as a
  `DiagnosticReport` (level, message, key/values); `build_diagnostic_array` makes the /diagnostics message
  with any kd3d_core `MessageFactory` (rclpy classes in the node, rosbags types in tests).
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any, Generic, TypeVar

from kd3d_core.errors import Kd3dError
from kd3d_core.localization.result import RECOVERED_BY
from kd3d_core.messages import as_factory, build_header, header_stamp_ns
from kd3d_ros.input_stream import InputLossMeter, RateLimiter

T = TypeVar("T")
Clock = Callable[[], float]


class NodeFailure(str, Enum):
    """Failures the node itself detects (the relocalizer's own are kd3d_core FailureReason values)."""

    NO_CAMERA_INFO = "no_camera_info"
    BAD_CAMERA_INFO = "bad_camera_info"
    CAMERA_INFO_MISMATCH = "camera_info_mismatch"
    BAD_IMAGE = "bad_image"
    ZERO_STAMP = "zero_stamp"
    NO_CAMERA_FRAME = "no_camera_frame"
    NO_ODOM_TF = "no_odom_tf"
    NO_BASE_TF = "no_base_tf"
    INTERNAL_ERROR = "internal_error"


class DiagLevel(IntEnum):
    """diagnostic_msgs/DiagnosticStatus levels."""

    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3


class LatestSlot(Generic[T]):
    """Thread-safe single-item mailbox: `put` overwrites, `take` waits for an item and empties the slot."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False

    def put(self, item: T) -> bool:
        """Store `item`; True when it replaced an item nobody took (that frame is dropped)."""
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """The newest item, waiting up to `timeout` seconds; None on timeout or once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout=timeout)
            if self._closed:
                return None
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        """Wake every waiter; later `take` calls return None at once."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """True after `close`."""
        return self._closed


class FailureLog:
    """Per-cause failure counts and log throttling ("log once per cause, then at most every period")."""

    def __init__(self, throttle_s: float = 10.0, clock: Clock = time.monotonic) -> None:
        self.counts: Counter[str] = Counter()
        self._throttle_s = throttle_s
        self._clock = clock
        self._last_logged: dict[str, float] = {}
        self._since_logged: Counter[str] = Counter()

    def record(self, cause: str) -> int:
        """Count one failure of `cause`; the number of failures to report in a log line now, or 0 for silence.

        The first failure of a cause is reported at once (1); later ones are reported together at most once
        per throttle period (the count accumulated since the previous log line).
        """
        self.counts[cause] += 1
        self._since_logged[cause] += 1
        now = self._clock()
        last = self._last_logged.get(cause)
        if last is not None and now - last < self._throttle_s:
            return 0
        self._last_logged[cause] = now
        pending, self._since_logged[cause] = self._since_logged[cause], 0
        return pending

    @property
    def total(self) -> int:
        """Failures of every cause so far."""
        return sum(self.counts.values())


@dataclass(frozen=True)
class DiagnosticReport:
    """What one diagnostic_msgs/DiagnosticStatus says: level, one-line message, key/value pairs."""

    level: DiagLevel
    message: str
    values: tuple[tuple[str, str], ...]


@dataclass
class _Window:
    """Sliding-window samples for one quantity."""

    samples: deque = field(default_factory=lambda: deque(maxlen=100))

    def add(self, value: float) -> None:
        self.samples.append(float(value))

    def mean(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else float("nan")

    def max(self) -> float:
        return max(self.samples) if self.samples else float("nan")


class NodeStats:
    """Counters and windows behind the node's diagnostics (thread-safe: callbacks and the worker update it)."""

    def __init__(self, window_s: float = 10.0, clock: Clock = time.monotonic, log_throttle_s: float = 10.0) -> None:
        self._clock = clock
        self._window_s = window_s
        self._lock = threading.Lock()
        self.received = 0
        self.dropped = 0
        self.skipped_rate = 0
        self.processed = 0
        self.localized = 0
        self.recovered: dict[str, int] = dict.fromkeys(RECOVERED_BY, 0)
        self.turned_upright = 0
        self.problems = FailureLog(throttle_s=log_throttle_s, clock=clock)
        self._received_t: deque = deque(maxlen=1000)
        self._processed_t: deque = deque(maxlen=1000)
        self._stages: dict[str, _Window] = {}
        self._inliers = _Window()
        self._last_cause: str | None = None
        self.input_loss = InputLossMeter()

    def on_received(self, stamp_ns: int | None = None) -> None:
        """A frame arrived on the image topic (stamped `stamp_ns` when its header was readable)."""
        with self._lock:
            self.received += 1
            self._received_t.append(self._clock())
            if stamp_ns is not None:
                self.input_loss.on_image(stamp_ns)

    def on_camera_info(self, stamp_ns: int) -> None:
        """A CameraInfo arrived: its stamps give the rate the camera really sends at."""
        with self._lock:
            self.input_loss.on_info(stamp_ns)

    def on_dropped(self) -> None:
        """A frame was replaced by a newer one before the worker took it."""
        with self._lock:
            self.dropped += 1

    def on_rate_skipped(self) -> None:
        """A frame was skipped by the rate limit."""
        with self._lock:
            self.skipped_rate += 1

    def on_processed(self, stages_ms: Mapping[str, float], inliers: int, failure: str | None,
                     recovered_by: str = "", turned_upright: bool = False) -> None:
        """A frame finished: per-stage times (ms), inliers, the cause that stopped it (None = localized), for
        a localized frame the upright pass lost what recovered it (one of RECOVERED_BY), and whether its pose came
        from the second look at the image turned upright."""
        with self._lock:
            if recovered_by and failure is None:
                self.recovered[recovered_by] = self.recovered.get(recovered_by, 0) + 1
            self.turned_upright += int(turned_upright and failure is None)
            self.processed += 1
            self._processed_t.append(self._clock())
            for name, ms in stages_ms.items():
                self._stages.setdefault(name, _Window()).add(ms)
            self._inliers.add(inliers)
            self.localized += int(failure is None)
            self._last_cause = failure

    def on_problem(self, cause: str, detail: str) -> str | None:
        """Count a problem; the line to log now, or None while this cause is throttled."""
        with self._lock:
            count = self.problems.record(cause)
        if not count:
            return None
        more = f" ({count} times since the last report)" if count > 1 else ""
        return f"{cause}: {detail}{more}"

    def _rate(self, stamps: deque) -> float:
        now = self._clock()
        recent = [t for t in stamps if now - t <= self._window_s]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-9)

    def report(self) -> DiagnosticReport:
        """Summary for /diagnostics."""
        with self._lock:
            input_hz, output_hz = self._rate(self._received_t), self._rate(self._processed_t)
            values = [("input_rate_hz", f"{input_hz:.2f}"), ("localize_rate_hz", f"{output_hz:.2f}"),
                      ("frames_received", str(self.received)), ("frames_dropped", str(self.dropped)),
                      ("frames_skipped_rate_limit", str(self.skipped_rate)),
                      ("frames_processed", str(self.processed)), ("frames_localized", str(self.localized)),
                      *((f"frames_localized_by_{how}", str(n)) for how, n in sorted(self.recovered.items())),
                      ("frames_turned_upright", str(self.turned_upright)),
                      ("problems", str(self.problems.total)), ("inliers_mean", f"{self._inliers.mean():.1f}")]
            values += self._loss_values()
            values += [(f"latency_{name}_ms_mean", f"{w.mean():.1f}") for name, w in sorted(self._stages.items())]
            values += [(f"latency_{name}_ms_max", f"{w.max():.1f}") for name, w in sorted(self._stages.items())]
            values += [(f"problem_{cause}", str(n)) for cause, n in sorted(self.problems.counts.items())]
            level, message = self._level()
            return DiagnosticReport(level, message, tuple(values))

    def _loss_values(self) -> list[tuple[str, str]]:
        period = self.input_loss.expected_period_ns()
        received, lost = self.input_loss.lost()
        percent = 100.0 * lost / (received + lost) if received + lost else 0.0
        return [("input_expected_hz", f"{1e9 / period:.2f}" if period else "unknown"),
                ("frames_lost_before_node", str(lost)), ("input_loss_percent", f"{percent:.1f}")]

    def _level(self) -> tuple[DiagLevel, str]:
        received, lost = self.input_loss.lost()
        if received + lost >= 20 and lost > 0.1 * (received + lost):
            return DiagLevel.WARN, (f"input loss: {lost} of the last {received + lost} camera frames never reached "
                                    "the node (large raw images? see config/fastdds_shm.xml)")
        if self.received == 0:
            return DiagLevel.WARN, "no image received yet"
        if self._clock() - self._received_t[-1] > self._window_s:
            return DiagLevel.WARN, f"no image for more than {self._window_s:.0f} s"
        if self.processed == 0:
            return DiagLevel.OK, "waiting for the first frame to be processed"
        if self._last_cause is None:
            return DiagLevel.OK, f"localized ({self.localized} of {self.processed} frames)"
        return DiagLevel.WARN, f"last frame not localized: {self._last_cause}"


class Intake:
    """What the image callback does with a frame: count it, rate-limit it by stamp, hand it to the worker.

    Args:
        max_rate_hz: at most this many frames per second of image time (0 = no limit).
        stats: counters to update.
    """

    def __init__(self, max_rate_hz: float, stats: NodeStats) -> None:
        self._limiter = RateLimiter(max_rate_hz)
        self._slot: LatestSlot[Any] = LatestSlot()
        self._stats = stats

    def offer(self, image_msg: Any) -> None:
        """Queue the frame for the worker unless the rate limit skips it (a frame without a readable stamp, or
        stamped 0, goes through, so that the pipeline reports it)."""
        try:
            stamp_ns = header_stamp_ns(image_msg)
        except Kd3dError:
            stamp_ns = None
        self._stats.on_received(stamp_ns)
        if stamp_ns and not self._limiter.accept(stamp_ns):
            self._stats.on_rate_skipped()
            return
        if self._slot.put(image_msg):
            self._stats.on_dropped()

    def take(self, timeout: float | None = None) -> Any | None:
        """The newest queued frame (waits up to `timeout` s; None on timeout or after close)."""
        return self._slot.take(timeout)

    def close(self) -> None:
        """Release the worker."""
        self._slot.close()

    @property
    def closed(self) -> bool:
        """True after close."""
        return self._slot.closed


def build_diagnostic_array(report: DiagnosticReport, stamp_ns: int, name: str, hardware_id: str,
                           typestore: Any) -> Any:
    """diagnostic_msgs/msg/DiagnosticArray with one DiagnosticStatus made from `report`.

    Args:
        typestore: a rosbags typestore or a kd3d_core `MessageFactory` (as kd3d_core.messages' builders take);
            DiagnosticStatus.level is a ROS `byte`, which the factory converts as each message library needs.
    """
    factory = as_factory(typestore)
    values = [factory.make("diagnostic_msgs/msg/KeyValue", key=k, value=v) for k, v in report.values]
    status = factory.make("diagnostic_msgs/msg/DiagnosticStatus", level=int(report.level), name=name,
                          message=report.message, hardware_id=hardware_id, values=values)
    return factory.make("diagnostic_msgs/msg/DiagnosticArray", header=build_header(factory, stamp_ns, ""),
                        status=[status])
