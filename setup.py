"""kd3d: one ament_python package (kd3d_ros) holding the ROS-free library kd3d_core and the rclpy nodes.

Works both with `colcon build` on a ROS 2 machine and with `pip install -e .` without ROS.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "kd3d_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["kd3d_core", "kd3d_core.*", "kd3d_ros", "kd3d_ros.*"]),
    package_data={"kd3d_core": ["assets/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", sorted(glob("launch/*.launch.py"))),
        (f"share/{PACKAGE}/config", sorted(glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml"))),
    ],
    python_requires=">=3.10",
    # torch is pinned by the install scripts (scripts/setup_env.sh) so CPU machines get the CPU wheel;
    # any torch >= 2.1 works, including a CUDA build a user installed beforehand.
    install_requires=[
        "setuptools",
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "rosbags>=0.10",
        "safetensors>=0.4",
        "scipy>=1.10",
        "tqdm>=4.60",
        "threadpoolctl>=3.1",  # NumPy's BLAS threads follow kd3d's thread policy (kd3d_core/threads.py)
        "matplotlib>=3.7",
        "pyyaml>=6",
        "torch>=2.1",
        "onnx>=1.15",  # onnx and onnxruntime: the fast encoder on ONNX Runtime (kd3d_core/students/ort_trunk.py)
        "onnxruntime>=1.17",
    ],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6"],
    },
    zip_safe=True,
    maintainer="kd3d team",
    maintainer_email="team@kd3d.dev",
    description="Online camera relocalization by knowledge distillation (DUSt3R teacher, scene-specific student).",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "kd3d = kd3d_core.cli:main",
            "relocalizer_node = kd3d_ros.relocalizer_node:main",
            "relocalizer_lifecycle_node = kd3d_ros.lifecycle_node:main",
            "distill = kd3d_ros.distill:main",
        ],
    },
)
