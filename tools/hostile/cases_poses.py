"""Hostile pose files for `kd3d evaluate`, and hostile ROS messages for the decoders (library level)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from tools.hostile.fixtures import colmap_lines, png_with_header, rigid, tum_lines
from tools.hostile.harness import Verdict, call, cli, expect_error, expect_ok, judge_common

N = 10


def _evaluate(work: Path, est: str | None, ref: str | None, est_name="est.txt", ref_name="ref.txt"):
    est_path, ref_path = work / est_name, work / ref_name
    if est is not None:
        est_path.write_text(est)
    if ref is not None:
        ref_path.write_text(ref)
    out = work / "report.json"
    return call(cli(["evaluate", "--estimates", est_path, "--reference", ref_path, "--json", out])), out


def _error(est: str | None, ref: str | None, **names):
    def run(work: Path, _bases):
        return expect_error(_evaluate(work, est, ref, **names)[0], work)
    return run


def _recall(est: str, ref: str, frames: int, recall: float, **names):
    """Exit 0 and the report says `frames` reference frames with recall_5cm_5deg == `recall`."""
    def run(work: Path, _bases):
        result, out = _evaluate(work, est, ref, **names)

        def check():
            report = json.loads(out.read_text())
            got = (report.get("frames"), round(report.get("recall_5cm_5deg", -1), 4))
            median = report.get("median_translation_m")
            if got != (frames, round(recall, 4)):
                return f"report says frames/recall {got}, expected {(frames, round(recall, 4))}"
            if median is None and recall >= 0.5:
                return "median translation missing although most frames are right"
            return None
        return expect_ok(result, work, check)
    return run


def _lines(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def _nan_first_stamp() -> str:
    lines = tum_lines(N)
    lines[0] = "nan" + lines[0][lines[0].index(" "):]
    return _lines(lines)


def _nan_pose_line(lines: list[str], i: int, field: int) -> str:
    parts = lines[i].split()
    parts[field] = "nan"
    lines[i] = " ".join(parts)
    return _lines(lines)


def _nonrigid_folder(work: Path, _bases):
    ref = work / "ref"
    ref.mkdir()
    for i in range(N):
        T = rigid(i)
        if i == 3:
            T[:3, :3] *= 2.0
        (ref / f"frame-{i:06d}.pose.txt").write_text("\n".join(" ".join(map(str, r)) for r in T) + "\n")
    (work / "est.txt").write_text(_lines(colmap_lines(N)))
    return expect_error(call(cli(["evaluate", "--estimates", work / "est.txt", "--reference", ref, "--json",
                                  work / "r.json"])), work)


def _dir_estimates(work: Path, _bases):
    (work / "est").mkdir()
    (work / "ref.txt").write_text(_lines(tum_lines(N)))
    return expect_error(call(cli(["evaluate", "--estimates", work / "est", "--reference", work / "ref.txt",
                                  "--json", work / "r.json"])), work)


TUM = _lines(tum_lines(N))
COLMAP = _lines(colmap_lines(N))
POSE_CASES = [
    ("TUM NaN stamp on the first line", _recall(_nan_first_stamp(), TUM, N, (N - 1) / N)),
    ("TUM NaN in one reference pose", _recall(TUM, _nan_pose_line(tum_lines(N), 4, 5), N, (N - 1) / N)),
    ("TUM NaN in one estimate", _recall(_nan_pose_line(tum_lines(N), 2, 1), TUM, N, (N - 1) / N)),
    ("COLMAP NaN in one reference pose", _recall(COLMAP, _nan_pose_line(colmap_lines(N), 5, 2), N, (N - 1) / N)),
    ("non-rigid reference (pose folder)", _nonrigid_folder),
    ("COLMAP duplicate estimate names", _error(_lines(colmap_lines(N) + colmap_lines(1)), COLMAP)),
    ("COLMAP duplicate reference names", _error(COLMAP, _lines(colmap_lines(N) + colmap_lines(2)))),
    ("TUM duplicate reference stamps", _error(TUM, _lines(tum_lines(N) + tum_lines(1)))),
    ("reference with comments only", _error(TUM, "# nothing here\n")),
    ("reference empty file", _error(TUM, "")),
    ("reference binary garbage", _error(TUM, bytes(range(256)).decode("latin-1") * 8)),
    ("estimates with 7 fields", _error(_lines([" ".join(ln.split()[:7]) for ln in tum_lines(N)]), TUM)),
    ("reference missing", _error(TUM, None)),
    ("estimates folder without poses", _dir_estimates),
    ("TUM zero quaternion", _error(_lines([ln.split()[0] + " 1 2 3 0 0 0 0" for ln in tum_lines(N)]), TUM)),
    ("TUM every stamp NaN", _error(_lines(["nan" + ln[ln.index(" "):] for ln in tum_lines(N)]), TUM)),
    ("TUM 1e308 translations", _recall(_lines([ln.split()[0] + " 1e308 1e308 1e308 0 0 0 1" for ln in tum_lines(N)]),
                                       TUM, N, 0.0)),
]


# ----------------------------------------------------------------------------------------------- messages
def _msg_case(fn_name: str, msg_fn):
    """Decoding must raise a kd3d error (or return), quickly and without allocating gigabytes."""
    def run(work: Path, _bases):
        def attempt():
            import kd3d_core.messages as messages
            from kd3d_core.errors import Kd3dError

            try:
                getattr(messages, fn_name)(msg_fn())
            except Kd3dError as err:
                print(f"refused: {err}")
                return 1
            return 0

        result = call(attempt, timeout_s=20)
        reasons = judge_common(result, work)
        if result.rc != 1:
            reasons.append(f"decoded without complaint (rc {result.rc})")
        return Verdict(not reasons, reasons, result)
    return run


def _image(width, height, step, data, encoding="rgb8"):
    return lambda: SimpleNamespace(height=height, width=width, encoding=encoding, is_bigendian=0, step=step,
                                   data=np.frombuffer(data, np.uint8) if isinstance(data, bytes) else data)


def _compressed(data: bytes, fmt: str = "png"):
    return lambda: SimpleNamespace(format=fmt, data=np.frombuffer(data, np.uint8))


def _jpeg_with_sof(width: int, height: int) -> bytes:
    sof = b"\xff\xc0" + (17).to_bytes(2, "big") + b"\x08" + height.to_bytes(2, "big") + width.to_bytes(2, "big") + \
        b"\x03\x01\x11\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + sof + b"\xff\xd9"


def _camera(width=64, height=48, k=None, d=None, model="plumb_bob"):
    k = [60.0, 0, 32, 0, 60.0, 24, 0, 0, 1] if k is None else k
    return lambda: SimpleNamespace(width=width, height=height, k=np.array(k, float),
                                   d=np.zeros(5) if d is None else np.asarray(d, float), distortion_model=model,
                                   r=np.eye(3).ravel(), p=np.zeros(12))


MESSAGE_CASES = [
    ("Image 10^6 x 10^6, 100 bytes", _msg_case("decode_rgb", _image(10**6, 10**6, 3 * 10**6, bytes(100)))),
    ("Image height 2^31", _msg_case("decode_rgb", _image(4, 2**31, 12, bytes(100)))),
    ("Image negative step", _msg_case("decode_rgb", _image(4, 4, -12, bytes(48)))),
    ("Image width 2^40", _msg_case("decode_rgb", _image(2**40, 1, 3 * 2**40, bytes(64)))),
    ("Image 32FC1 as colour", _msg_case("decode_rgb", _image(4, 4, 16, bytes(64), "32FC1"))),
    ("Image unknown encoding", _msg_case("decode_rgb", _image(4, 4, 12, bytes(48), "yuv422_weird"))),
    ("Compressed PNG header 60000x60000", _msg_case("decode_rgb", _compressed(png_with_header(60000, 60000)))),
    ("Compressed PNG header 2^31 wide", _msg_case("decode_rgb", _compressed(png_with_header(2**31 - 1, 1)))),
    ("Compressed JPEG SOF 65000x65000", _msg_case("decode_rgb", _compressed(_jpeg_with_sof(65000, 65000), "jpeg"))),
    ("Compressed random bytes", _msg_case("decode_rgb", _compressed(bytes(range(256)) * 8))),
    ("Compressed empty", _msg_case("decode_rgb", _compressed(b""))),
    ("compressedDepth 12-byte header only", _msg_case("decode_depth", _compressed(bytes(12),
                                                                                  "16UC1; compressedDepth png"))),
    ("compressedDepth PNG header 50000x50000",
     _msg_case("decode_depth", _compressed(bytes(12) + png_with_header(50000, 50000, 16, 0),
                                           "16UC1; compressedDepth png"))),
    ("CameraInfo 10^6 x 10^6", _msg_case("camera_info_to_model", _camera(10**6, 10**6))),
    ("CameraInfo width -1", _msg_case("camera_info_to_model", _camera(-1, 48))),
    ("CameraInfo K NaN", _msg_case("camera_info_to_model", _camera(k=[float("nan")] * 9))),
    ("CameraInfo 10^6 distortion coefficients", _msg_case("camera_info_to_model", _camera(d=np.ones(10**6)))),
    ("CameraInfo unknown distortion model", _msg_case("camera_info_to_model", _camera(d=[0.1, 0, 0, 0, 0],
                                                                                     model="weird_lens"))),
]
