"""Hostile scene folders: info.txt numbers, kd3d.json, timestamps, frame names, split.txt, images, poses."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from tools.hostile.fixtures import info_lines, png_with_header
from tools.hostile.harness import call, cli, expect_error, expect_ok


def _scene(work: Path, bases, labels: bool = False) -> Path:
    """A fresh copy of the base scene (with its depth labels only when asked)."""
    dst = work / "scene"
    shutil.copytree(bases.scene, dst, ignore=None if labels else shutil.ignore_patterns("labels"))
    return dst


def _info(**override):
    def mutate(scene: Path) -> None:
        (scene / "info.txt").write_text("\n".join(info_lines(**override)) + "\n")
    return mutate


def _write(rel: str, content: bytes | str):
    def mutate(scene: Path) -> None:
        path = scene / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return mutate


def _meta(fn):
    def mutate(scene: Path) -> None:
        meta = json.loads((scene / "kd3d.json").read_text())
        fn(meta)
        (scene / "kd3d.json").write_text(json.dumps(meta))
    return mutate


def _split_txt(text: str):
    def mutate(scene: Path) -> None:
        (scene / "kd3d.json").unlink()
        (scene / "split.txt").write_text(text)
    return mutate


def _image(rel: str, array: np.ndarray):
    def mutate(scene: Path) -> None:
        cv2.imwrite(str(scene / rel), array)
    return mutate


def _pose(rel: str, T: np.ndarray | str):
    def mutate(scene: Path) -> None:
        text = T if isinstance(T, str) else "\n".join(" ".join(f"{v:.17g}" for v in r) for r in T) + "\n"
        (scene / rel).write_text(text)
    return mutate


def _nonrigid() -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] *= 2.0
    return T


def _deep_json(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def _info_case(mutate):
    def run(work: Path, bases):
        scene = _scene(work, bases)
        mutate(scene)
        return expect_error(call(cli(["info", scene])), work)
    return run


def _info_ok_case(mutate):
    """A valid but extreme scene: `kd3d info` must answer (exit 0) within the time limit."""
    def run(work: Path, bases):
        scene = _scene(work, bases)
        mutate(scene)
        return expect_ok(call(cli(["info", scene])), work)
    return run


def _teach_case(mutate):
    def run(work: Path, bases):
        scene = _scene(work, bases)
        mutate(scene)
        return expect_error(call(cli(["teach", scene, "--teacher", "depth", "--no-progress"])), work)
    return run


def _localize_case(mutate, bad_image: bool = True):
    """One bad query frame: the run must finish (exit 0) and, for an unusable image, count it as bad_image."""
    def run(work: Path, bases):
        scene = _scene(work, bases)
        mutate(scene)
        out = work / "poses.txt"
        result = call(cli(["localize", bases.vit, scene, "--out", out, "--quiet"]), timeout_s=60)

        def check():
            if not out.exists():
                return "no pose file written"
            if bad_image and "bad_image" not in result.stderr:
                return "the bad frame was not reported as bad_image (used as if it were fine)"
            return None
        return expect_ok(result, work, check)
    return run


def _no_data_dir(scene: Path) -> None:
    shutil.rmtree(scene / "data")
    (scene / "data").write_text("not a folder")


def _duplicate_frame(scene: Path) -> None:
    shutil.copy(scene / "data/frame-000001.color.png", scene / "data/frame-000001.color.jpg")


def _info_is_dir(scene: Path) -> None:
    (scene / "info.txt").unlink()
    (scene / "info.txt").mkdir()


def _big_pose(scene: Path) -> None:
    with open(scene / "data/frame-000003.pose.txt", "w") as fh:
        fh.write("1 " * 5_000_000)


def _incomplete_labels(scene: Path) -> None:
    path = scene / "labels" / "depth" / "labels.json"
    meta = json.loads(path.read_text())
    meta["extra"]["complete"] = False
    path.write_text(json.dumps(meta))
    os.unlink(sorted((scene / "labels" / "depth").glob("*.npz"))[0])


def _train_incomplete(work: Path, bases):
    scene = _scene(work, bases, labels=True)
    _incomplete_labels(scene)
    argv = ["train", scene, "--student", "cnn", "--arch-opt", "channels=8,8,8,8,8,8", "--arch-opt", "head_channels=8",
            "--size", "64x48", "--epochs", "1", "--batch-size", "2", "--out", work / "m.kd3d"]
    return expect_error(call(cli(argv), timeout_s=90), work, "incomplete")


W, H = 64, 48
CASES = [
    ("info.txt m_colorWidth = 0", _info_case(_info(m_colorWidth="0"))),
    ("info.txt m_colorWidth = abc", _info_case(_info(m_colorWidth="abc"))),
    ("info.txt m_colorWidth = -64", _info_case(_info(m_colorWidth="-64"))),
    ("info.txt m_colorWidth = 1e12", _info_case(_info(m_colorWidth="1e12"))),
    ("info.txt m_colorWidth = 99999999999", _info_case(_info(m_colorWidth="99999999999"))),
    ("info.txt m_colorWidth = 64.5", _info_case(_info(m_colorWidth="64.5"))),
    ("info.txt without m_colorHeight", _info_case(_info(m_colorHeight=None))),
    ("info.txt m_depthShift = abc", _info_case(_info(m_depthShift="abc"))),
    ("info.txt m_depthShift = 0", _teach_case(_info(m_depthShift="0"))),
    ("info.txt m_depthShift = nan", _teach_case(_info(m_depthShift="nan"))),
    ("info.txt m_depthShift = -1000", _teach_case(_info(m_depthShift="-1000"))),
    ("info.txt m_depthWidth = x", _info_case(_info(m_depthWidth="x"))),
    ("info.txt K with NaN", _teach_case(_info(m_calibrationColorIntrinsic="nan 0 32 0 0 60 24 0 0 0 1 0 0 0 0 1"))),
    ("info.txt K with 5 numbers", _info_case(_info(m_calibrationColorIntrinsic="1 2 3 4 5"))),
    ("info.txt K with text", _info_case(_info(m_calibrationColorIntrinsic="a b c d e f g h i"))),
    ("info.txt K focal 0", _teach_case(_info(m_calibrationColorIntrinsic="0 0 32 0 0 0 24 0 0 0 1 0 0 0 0 1"))),
    ("info.txt binary garbage", _info_case(_write("info.txt", bytes(range(256)) * 4))),
    ("info.txt is a folder", _info_case(_info_is_dir)),
    ("data/ is a file", _info_case(_no_data_dir)),
    ("kd3d.json nested 100000 deep", _info_case(_write("kd3d.json", _deep_json()))),
    ("kd3d.json a list", _info_case(_write("kd3d.json", "[1, 2]"))),
    ("kd3d.json invalid", _info_case(_write("kd3d.json", "{\"splits\": "))),
    ("kd3d.json splits a list", _info_case(_meta(lambda m: m.update(splits=[1, 2])))),
    ("kd3d.json split names a missing frame",
     _info_case(_meta(lambda m: m["splits"]["query"].append("frame-000099")))),
    ("kd3d.json unknown split", _info_case(_meta(lambda m: m["splits"].update(test=["frame-000000"])))),
    ("kd3d.json split of numbers", _info_case(_meta(lambda m: m["splits"].update(query=[1, 2])))),
    ("kd3d.json world_frame = 5", _info_case(_meta(lambda m: m.update(world_frame=5)))),
    ("timestamps.txt stamp abc", _info_case(_write("timestamps.txt", "frame-000000 abc\n"))),
    ("timestamps.txt float stamp", _info_case(_write("timestamps.txt", "frame-000000 1.5e9\n"))),
    ("timestamps.txt three fields", _info_case(_write("timestamps.txt", "frame-000000 1 2\n"))),
    ("timestamps.txt stamp 2^70", _info_case(_write("timestamps.txt", f"frame-000000 {2**70}\n"))),
    ("frame named frame-abc", _info_case(lambda s: shutil.copy(s / "data/frame-000000.color.png",
                                                               s / "data/frame-abc.color.png"))),
    ("frame as .jpg and .png", _info_case(_duplicate_frame)),
    ("split.txt end=999999999999 (must finish)",
     _info_ok_case(_split_txt("sequence0 [frames=2]  [start=0 ; end=1]\n"
                              "sequence1 [frames=4]  [start=2 ; end=999999999999]\n"))),
    ("split.txt end < start", _info_case(_split_txt("sequence0 [frames=2]  [start=5 ; end=1]\n"))),
    ("split.txt names 100 frames, 6 exist", _info_case(_split_txt("sequence1 [frames=100]  [start=0 ; end=99]\n"))),
    ("query PNG header 60000x60000",
     _localize_case(_write("data/frame-000000.color.png", png_with_header(60000, 60000)))),
    ("query PNG random bytes", _localize_case(_write("data/frame-000000.color.png", os.urandom(3000)))),
    ("query PNG empty file", _localize_case(_write("data/frame-000001.color.png", b""))),
    ("query image 32x24 vs info 64x48",
     _localize_case(_image("data/frame-000000.color.png", np.zeros((24, 32, 3), np.uint8) + 90))),
    ("query image 16-bit grey", _localize_case(_image("data/frame-000001.color.png",
                                                      np.full((H, W), 40000, np.uint16)), bad_image=False)),
    ("depth 8-bit PNG", _teach_case(_image("data/frame-000003.depth.png", np.full((H, W), 200, np.uint8)))),
    ("depth 37x91", _teach_case(_image("data/frame-000003.depth.png", np.full((91, 37), 1500, np.uint16)))),
    ("depth PNG header 50000x50000",
     _teach_case(_write("data/frame-000003.depth.png", png_with_header(50000, 50000, 16, 0)))),
    ("depth 3-channel 16-bit", _teach_case(_image("data/frame-000003.depth.png", np.full((H, W, 3), 1500, np.uint16)))),
    ("pose non-rigid (rotation x 2)", _teach_case(_pose("data/frame-000003.pose.txt", _nonrigid()))),
    ("pose with 15 numbers", _info_case(_pose("data/frame-000003.pose.txt", "1 " * 15))),
    ("pose text hello", _info_case(_pose("data/frame-000003.pose.txt", "hello world"))),
    ("pose file 10 MB", _info_case(_big_pose)),
    ("labels marked incomplete -> train", _train_incomplete),
]
