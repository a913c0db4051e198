"""Helpers of the live node tests: the node as its own process, started from its console script the way
`ros2 run kd3d_ros relocalizer_node` starts it, and a probe node in the test process that publishes camera
messages over real DDS and records what the node publishes, with receipt times.

Both sides use one ROS domain of their own (ROS_DOMAIN_ID) and localhost-only discovery, so concurrent test runs
and other graphs on the network never see each other.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "relocalizer.yaml"
CAMERA_FRAME = "camera_color_optical_frame"
IMAGE_TOPIC = "/camera/color/image_raw"
INFO_TOPIC = "/camera/color/camera_info"
DOMAIN_ID = 100 + uuid.uuid4().int % 130  # one domain per test session (valid ids are 0-232)


def ros_environment(domain_id: int = DOMAIN_ID) -> dict[str, str]:
    """This process's environment with the test's own domain, localhost discovery and one torch thread."""
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0", RCUTILS_LOGGING_BUFFERED_STREAM="0")
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated in Jazzy in favour of ROS_AUTOMATIC_DISCOVERY_RANGE
    return env


def console_script(name: str = "relocalizer_node") -> Path:
    """The console script pip installed next to this interpreter (what `ros2 run kd3d_ros NAME` executes)."""
    path = Path(sys.executable).with_name(name)
    if not path.is_file():
        raise AssertionError(f"{path} is missing: run scripts/setup_env.sh (pip install -e .)")
    return path


def documented_node_command(readme: Path = ROOT / "README.md") -> list[str]:
    """The README's `ros2 run kd3d_ros relocalizer_node ...` line, as a list of arguments after the executable."""
    match = re.search(r"^ros2 run kd3d_ros relocalizer_node (.+)$", readme.read_text(encoding="utf-8"), re.M)
    if match is None:
        raise AssertionError("README.md has no `ros2 run kd3d_ros relocalizer_node ...` line")
    return match.group(1).split("#")[0].split()


class NodeProcess:
    """A relocalizer node process: started with `args`, stopped with SIGINT; its output goes to `log`."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None,
                 script: str = "relocalizer_node") -> None:
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([str(console_script(script)), *args], cwd=ROOT, env=env or ros_environment(),
                                     stdout=self._log_file, stderr=subprocess.STDOUT)

    def output(self) -> str:
        """What the node printed so far (stdout and stderr)."""
        return self.log.read_text(errors="replace")

    def check_alive(self) -> None:
        """Fail with the node's output when it exited."""
        if self.proc.poll() is not None:
            raise AssertionError(f"the node exited with {self.proc.returncode}:\n{self.output()[-3000:]}")

    def stop(self, timeout: float = 20.0, sig: int = signal.SIGINT) -> int:
        """SIGINT (Ctrl-C, as `ros2 run` forwards it) or `sig`, wait, and return the exit code (kill after
        `timeout`)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(f"the node ignored signal {sig} for {timeout} s:\n{self.output()[-3000:]}") from None
        self._log_file.close()
        return self.proc.returncode


class Received(NamedTuple):
    """A message the probe received, with its receipt time (time.monotonic())."""

    msg: Any
    t: float


def stamp_ns(msg: Any) -> int:
    """header.stamp as integer nanoseconds."""
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def set_stamp(msg: Any, ns: int) -> Any:
    """Set msg.header.stamp to `ns` nanoseconds (in place) and return msg."""
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(ns), 1_000_000_000)
    return msg


class Probe:
    """A node in the test process: camera publishers and recorders of every relocalizer output.

    Args:
        rclpy: the rclpy module (imported by the test, which skips without it).
        compressed: publish sensor_msgs/CompressedImage on IMAGE_TOPIC/compressed instead of raw images.
    """

    OUTPUTS = {"pose": ("geometry_msgs.msg", "PoseStamped", "/relocalizer/pose"),
               "cov": ("geometry_msgs.msg", "PoseWithCovarianceStamped", "/relocalizer/pose_with_covariance"),
               "cloud": ("sensor_msgs.msg", "PointCloud2", "/relocalizer/points"),
               "initialpose": ("geometry_msgs.msg", "PoseWithCovarianceStamped", "/initialpose"),
               "diag": ("diagnostic_msgs.msg", "DiagnosticArray", "/diagnostics")}

    def __init__(self, rclpy: Any, compressed: bool = False, domain_id: int = DOMAIN_ID) -> None:
        import importlib

        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(f"kd3d_live_probe_{uuid.uuid4().hex[:8]}", context=self.context)
        self.lock = threading.Lock()
        self.received: dict[str, list[Received]] = {key: [] for key in self.OUTPUTS}
        self.sent_at: dict[int, float] = {}
        for key, (module, name, topic) in self.OUTPUTS.items():
            msg_type = getattr(importlib.import_module(module), name)
            self.node.create_subscription(msg_type, topic, self._recorder(key), 100)
        image_type, topic = (CompressedImage, IMAGE_TOPIC + "/compressed") if compressed else (Image, IMAGE_TOPIC)
        self.image_pub = self.node.create_publisher(image_type, topic, 10)
        self.info_pub = self.node.create_publisher(CameraInfo, INFO_TOPIC, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _recorder(self, key: str) -> Callable[[Any], None]:
        def record(msg: Any) -> None:
            now = time.monotonic()
            with self.lock:
                self.received[key].append(Received(msg, now))
        return record

    def messages(self, key: str) -> list[Received]:
        """A copy of what arrived on an output so far."""
        with self.lock:
            return list(self.received[key])

    def send(self, image: Any, info: Any | None, ns: int) -> None:
        """Publish CameraInfo (when given) and the image, both stamped `ns`, as a camera driver does."""
        if info is not None:
            self.info_pub.publish(set_stamp(info, ns))
        self.sent_at[ns] = time.monotonic()
        self.image_pub.publish(set_stamp(image, ns))

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str,
                 node: NodeProcess | None = None) -> None:
        """Poll `condition` until true; fail after `timeout` s (or as soon as `node` exits)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if node is not None:
                node.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.02)

    def diagnostics(self) -> dict[str, Any]:
        """The latest relocalizer status: its key/values plus _level, _name, _message, _hardware_id."""
        with self.lock:
            arrays = [r.msg for r in self.received["diag"]]
        statuses = [s for a in arrays for s in a.status if s.name.endswith(": relocalization")]
        if not statuses:
            return {}
        s = statuses[-1]
        level = s.level[0] if isinstance(s.level, (bytes, bytearray)) else int(s.level)
        return {kv.key: kv.value for kv in s.values} | {"_level": level, "_name": s.name, "_message": s.message,
                                                        "_hardware_id": s.hardware_id}

    def wait_diagnostics(self, condition: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict:
        """The first diagnostics (after now) for which `condition` holds."""
        self.wait_for(lambda: bool(self.diagnostics()) and condition(self.diagnostics()), timeout, what)
        return self.diagnostics()

    def close(self) -> None:
        """Stop spinning and shut the probe's context down."""
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
        self._thread.join(timeout=5)


def latencies_ms(probe: Probe, key: str = "pose", stamps: set[int] | None = None) -> np.ndarray:
    """Receipt minus send time (ms) of each output on `key` (restricted to `stamps` when given)."""
    out = [(r.t - probe.sent_at[stamp_ns(r.msg)]) * 1000.0 for r in probe.messages(key)
           if stamp_ns(r.msg) in probe.sent_at and (stamps is None or stamp_ns(r.msg) in stamps)]
    return np.asarray(out)
