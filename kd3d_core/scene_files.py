"""The text files of a scene folder, parsed and validated: info.txt, kd3d.json, timestamps.txt, split.txt.

Every number and name in them is a claim about the data: sizes are bounded and checked, intrinsics must be
finite pinhole matrices, split entries must name frames that exist (never enumerated: a range may end at any
number). Anything else raises SceneError naming the file, the line or the key.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from kd3d_core.errors import MessageError, SceneError
from kd3d_core.messages.images import check_image_size

KD3D_META = "kd3d.json"
TIMESTAMPS = "timestamps.txt"
SPLIT_NAMES = ("mapping", "query", "all")


def read_text(path: Path) -> str:
    """A text file's content; SceneError (not OSError/UnicodeDecodeError) when it cannot be read."""
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise SceneError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from err


def parse_info_txt(path: Path) -> dict[str, str]:
    """info.txt as a key -> raw value dictionary."""
    out: dict[str, str] = {}
    for line in read_text(path).splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def info_number(info: dict[str, str], key: str, kind: type, default: float | None = None) -> float:
    """A finite number from info.txt (SceneError naming the key otherwise)."""
    if key not in info:
        if default is None:
            raise SceneError(f"info.txt has no {key}")
        return default
    try:
        value = float(info[key])
    except ValueError:
        raise SceneError(f"info.txt {key} = {info[key]!r} is not a number") from None
    if not math.isfinite(value) or (kind is int and not value.is_integer()):
        raise SceneError(f"info.txt {key} = {info[key]!r} is not a finite {kind.__name__}")
    return int(value) if kind is int else value


def info_size(info: dict[str, str], prefix: str, required: bool) -> tuple[int, int] | None:
    """(w, h) from m_{prefix}Width / m_{prefix}Height; None when absent or 0 x 0 (optional sizes only)."""
    wkey, hkey = f"m_{prefix}Width", f"m_{prefix}Height"
    if not required and wkey not in info and hkey not in info:
        return None
    w, h = int(info_number(info, wkey, int)), int(info_number(info, hkey, int))
    if not required and w == 0 and h == 0:
        return None
    try:
        check_image_size(w, h, f"info.txt {wkey} x {hkey}")
    except MessageError as err:
        raise SceneError(str(err)) from None
    return w, h


def matrix_from_info(info: dict[str, str], key: str) -> np.ndarray | None:
    """A 3x3 pinhole K from a 16- or 9-number info.txt entry; SceneError unless finite with positive focals."""
    if key not in info:
        return None
    try:
        vals = np.array(info[key].split(), dtype=np.float64)
    except ValueError:
        raise SceneError(f"info.txt {key} holds something that is not a number: {info[key][:80]!r}") from None
    if vals.size == 16:
        K = vals.reshape(4, 4)[:3, :3]
    elif vals.size == 9:
        K = vals.reshape(3, 3)
    else:
        raise SceneError(f"info.txt key {key} has {vals.size} numbers, expected 16")
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise SceneError(f"info.txt {key} is not a calibrated pinhole matrix (fx={K[0, 0]}, fy={K[1, 1]}; "
                         "focal lengths must be finite and positive)")
    return K


def read_kd3d_meta(root: Path) -> dict:
    """kd3d.json as a dict ({} when absent); SceneError when it is not a JSON object."""
    path = root / KD3D_META
    if not path.is_file():
        return {}
    try:
        meta = json.loads(read_text(path))
    except (json.JSONDecodeError, RecursionError) as err:
        detail = err if isinstance(err, json.JSONDecodeError) else "nested too deeply"
        raise SceneError(f"{path} is not valid JSON: {detail}") from None
    if not isinstance(meta, dict):
        raise SceneError(f"{path} must hold a JSON object, not {type(meta).__name__}")
    return meta


def read_timestamps(root: Path) -> dict[str, int]:
    """timestamps.txt as frame name -> stamp in ns ({} when absent); SceneError naming a bad line."""
    path = root / TIMESTAMPS
    if not path.is_file():
        return {}
    stamps = {}
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            if len(parts) != 2:
                raise ValueError
            stamp = int(parts[1])
        except ValueError:
            raise SceneError(f"{path}:{lineno}: expected `frame-name stamp_ns` (an integer), got {line[:80]!r}") \
                from None
        if stamp < 0 or stamp >= 1 << 63:
            raise SceneError(f"{path}:{lineno}: stamp {stamp} is out of range")
        stamps[parts[0]] = stamp
    return stamps


SPLIT_RE = re.compile(r"sequence(\d+)\s*\[frames=(\d+)\]\s*\[start=(\d+)\s*;\s*end=(\d+)\]")
FRAME_RE = re.compile(r"^frame-(\d+)$")


def splits_from_split_txt(path: Path, names: list[str]) -> dict[str, tuple[str, ...]]:
    """12Scenes split.txt: sequence0 is the test (query) range, the other sequences are training (mapping).

    A range's frames are looked up among the frames present (never enumerated: `end` can be any number); a
    range that claims more frames than data/ holds is an error, not silently shortened.
    """
    index = {int(FRAME_RE.match(n).group(1)): n for n in names}
    numbers = sorted(index)
    mapping, query = [], []
    for m in SPLIT_RE.finditer(read_text(path)):
        seq, claimed, start, end = (int(g) for g in m.groups())
        if end < start:
            raise SceneError(f"{path}: sequence{seq} ends ({end}) before it starts ({start})")
        lo, hi = np.searchsorted(numbers, start), np.searchsorted(numbers, end, side="right")
        chosen = [index[i] for i in numbers[lo:hi]]
        if len(chosen) < min(claimed, end - start + 1):
            raise SceneError(f"{path}: sequence{seq} names {min(claimed, end - start + 1)} frames ({start}..{end}) "
                             f"but data/ holds {len(chosen)} of them")
        (query if seq == 0 else mapping).extend(chosen)
    return {"mapping": tuple(mapping), "query": tuple(query)}


def splits_from_meta(meta: dict, names: list[str], path: Path) -> dict[str, tuple[str, ...]]:
    """kd3d.json `splits`: {"mapping": [...], "query": [...]}; every name must be a frame of the scene."""
    raw = meta["splits"]
    if not isinstance(raw, dict):
        raise SceneError(f"{path}: `splits` must be an object of name lists")
    known = set(names)
    splits: dict[str, tuple[str, ...]] = {}
    for key, value in raw.items():
        if key not in SPLIT_NAMES:
            raise SceneError(f"{path}: unknown split {key!r} (use mapping, query)")
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SceneError(f"{path}: split {key!r} must be a list of frame names")
        missing = [v for v in value if v not in known]
        if missing:
            raise SceneError(f"{path}: split {key!r} names {len(missing)} frame(s) that data/ does not hold, "
                             f"e.g. {missing[:3]}")
        if len(set(value)) != len(value):
            raise SceneError(f"{path}: split {key!r} lists a frame more than once")
        splits[key] = tuple(value)
    return splits
