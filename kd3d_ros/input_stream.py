"""What arrives from the camera, judged by header stamps alone (no rclpy): how many frames to let through
(`RateLimiter`) and how many the network lost before the node saw them (`InputLossMeter`)."""
from __future__ import annotations

import bisect
from collections import deque


class RateLimiter:
    """At most `max_rate` frames per second of image time (stamps), as a token bucket.

    Tokens accrue at `max_rate` per second of image time, up to `burst`; a frame is accepted when a whole token is
    there. Comparing each stamp with the last accepted one plus the period (the first version) loses about a
    frame in three to stamp jitter: a 10 Hz camera with max_rate 10 gave 6.3 Hz, a 30 Hz one 8.3 Hz. The bucket
    keeps the long-run rate at max_rate whatever the jitter (it may run `burst` frames ahead over a short window).
    Stamps going backwards (a bag played in a loop, a restarted driver) restart the bucket instead of blocking
    until time catches up again.
    """

    def __init__(self, max_rate_hz: float, burst: float = 2.0) -> None:
        self._rate = float(max_rate_hz)
        self._burst = float(burst)
        self._tokens = 0.0
        self._last_ns: int | None = None

    def accept(self, stamp_ns: int) -> bool:
        """True when the frame stamped `stamp_ns` should be processed (and spend its token)."""
        if self._rate <= 0:
            return True
        if self._last_ns is None or stamp_ns < self._last_ns:
            self._tokens = 1.0
        else:
            self._tokens = min(self._burst, self._tokens + (stamp_ns - self._last_ns) * 1e-9 * self._rate)
        self._last_ns = stamp_ns
        if self._tokens >= 1.0 - 1e-9:
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False


class InputLossMeter:
    """Frames the camera sent that never reached the image callback, seen as gaps between header stamps.

    DDS can lose large images before any callback runs (best-effort QoS; with default Fast DDS, raw 640x480 rgb8
    frames lose 25-85 % when they do not fit the shared-memory segment), so counting callbacks alone hides it.
    A driver sends one CameraInfo per image, with the image's stamp, and the small messages arrive intact: a
    CameraInfo stamp that no image carried is a lost frame. Without CameraInfo, gaps between image stamps are
    compared with their median (the expected period). Gaps longer than `max_gap_s` (a paused bag, a stopped
    driver) are not counted as loss.
    """

    def __init__(self, window: int = 300, max_gap_s: float = 2.0) -> None:
        self._info: deque = deque(maxlen=window)
        self._images: deque = deque(maxlen=window)
        self._max_gap_ns = int(max_gap_s * 1e9)

    def on_info(self, stamp_ns: int) -> None:
        """A CameraInfo stamped `stamp_ns` arrived."""
        if stamp_ns > 0 and (not self._info or self._info[-1] != stamp_ns):
            self._info.append(stamp_ns)

    def on_image(self, stamp_ns: int) -> None:
        """An image stamped `stamp_ns` reached the callback."""
        if stamp_ns > 0 and (not self._images or self._images[-1] != stamp_ns):
            self._images.append(stamp_ns)

    def expected_period_ns(self) -> float | None:
        """The camera's frame period from CameraInfo stamps (else image stamps); None until known."""
        for stamps in (self._info, self._images):
            gaps = [b - a for a, b in zip(sorted(stamps), sorted(stamps)[1:]) if 0 < b - a <= self._max_gap_ns]
            if len(gaps) >= 2:
                return float(sorted(gaps)[len(gaps) // 2])
        return None

    def lost(self) -> tuple[int, int]:
        """(frames received, frames lost) over the window of image stamps.

        With CameraInfo, every CameraInfo stamp between two received images that no image carried is a lost
        frame (exact whatever the rate); without, each gap of n expected periods counts n - 1.
        """
        stamps = sorted(set(self._images))
        if len(stamps) < 2:
            return len(stamps), 0
        received = set(stamps)
        info = [s for s in set(self._info) if stamps[0] < s < stamps[-1] and s not in received]
        if len(self._info) >= 2:
            lost = 0
            for s in info:
                i = bisect.bisect(stamps, s)
                lost += int(stamps[i] - stamps[i - 1] <= self._max_gap_ns)
            return len(stamps), lost
        period = self.expected_period_ns()
        if period is None:
            return len(stamps), 0
        gaps = [b - a for a, b in zip(stamps, stamps[1:]) if b - a <= self._max_gap_ns]
        return len(stamps), int(sum(max(0, round(gap / period) - 1) for gap in gaps))
