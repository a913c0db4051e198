"""Run as a script by test_fastdds_profile.py: publish or count raw rgb8 images over DDS in its own process.

    python dds_image_probe.py sub WIDTH HEIGHT SECONDS      prints "received N" (stops 1 s after the last frame)
    python dds_image_probe.py pub WIDTH HEIGHT FRAMES       waits for a subscriber, sends at 30 Hz, prints "sent N"

Both sides use sensor-data QoS (best effort, keep last 1), as camera drivers and the relocalizer do.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)


def main() -> None:
    mode, width, height, amount = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    rclpy.init()
    node = rclpy.create_node(f"kd3d_dds_image_{mode}")
    if mode == "sub":
        stamps: set[int] = set()
        last = [0.0]

        def count(msg: Image) -> None:
            stamps.add(msg.header.stamp.nanosec)
            last[0] = time.monotonic()
        node.create_subscription(Image, "/kd3d_test/image", count, QOS)
        end = time.monotonic() + amount
        while time.monotonic() < end and not (stamps and time.monotonic() - last[0] > 1.0):
            rclpy.spin_once(node, timeout_sec=0.05)
        print(f"received {len(stamps)}", flush=True)
    else:
        pub = node.create_publisher(Image, "/kd3d_test/image", QOS)
        deadline = time.monotonic() + 30
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # let the subscriber's side match too
        data = np.random.default_rng(0).integers(0, 256, width * height * 3, dtype=np.uint8).tobytes()
        msg = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=data)
        for i in range(int(amount)):
            msg.header.stamp.nanosec = i + 1
            pub.publish(msg)
            time.sleep(1 / 30)
        print(f"sent {int(amount)}", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
