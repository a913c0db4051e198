"""sensor_msgs/Image and sensor_msgs/CompressedImage <-> numpy.

Decoding accepts any object with the standard field names (rosbags dataclasses, rclpy messages) and returns
the kd3d in-memory conventions: colour as RGB uint8 (h, w, 3), depth as float32 metres (h, w) with 0 = invalid.
Rows are read with the message's `step` (drivers pad rows) and byte order with `is_bigendian`.
Depth encodings follow REP 118: 16UC1 (and mono16) in millimetres with 0 invalid, 32FC1 in metres with NaN
invalid.
"""
from __future__ import annotations

import struct
from typing import Any, NamedTuple

import cv2
import numpy as np

from kd3d_core.errors import MessageError
from kd3d_core.messages.factory import as_factory, build_header

# encoding -> (numpy dtype, channels); the ones kd3d reads and writes.
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3), "bgr8": (np.dtype(np.uint8), 3), "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4), "mono8": (np.dtype(np.uint8), 1), "8UC1": (np.dtype(np.uint8), 1),
    "8UC3": (np.dtype(np.uint8), 3), "mono16": (np.dtype(np.uint16), 1), "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "8UC3", "mono16")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
_TO_RGB = {"rgb8": None, "bgr8": cv2.COLOR_BGR2RGB, "8UC3": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB,
           "bgra8": cv2.COLOR_BGRA2RGB, "mono8": cv2.COLOR_GRAY2RGB, "8UC1": cv2.COLOR_GRAY2RGB}


# Largest image kd3d decodes: 16k pixels a side and 64 Mpixel (an 8k x 8k frame). Sizes come from headers that
# a corrupt or hostile file can fill with anything, so they are checked BEFORE anything is allocated.
MAX_IMAGE_SIDE = 16384
MAX_IMAGE_PIXELS = 1 << 26
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def encoded_image_size(data: bytes | bytearray | memoryview | np.ndarray) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header without decoding; None for other formats or a cut header."""
    buf = bytes(data[:32]) if not isinstance(data, np.ndarray) else data[:32].tobytes()
    if buf.startswith(_PNG_SIGNATURE) and len(buf) >= 24 and buf[12:16] == b"IHDR":
        return struct.unpack(">II", buf[16:24])
    if not buf.startswith(b"\xff\xd8"):
        return None
    raw = memoryview(data if not isinstance(data, np.ndarray) else np.ascontiguousarray(data).view(np.uint8)).cast("B")
    pos = 2
    while pos + 4 <= len(raw):
        if raw[pos] != 0xFF:
            return None
        marker = raw[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        length = (raw[pos + 2] << 8) | raw[pos + 3]
        if marker in _JPEG_SOF and pos + 9 <= len(raw):
            height = (raw[pos + 5] << 8) | raw[pos + 6]
            width = (raw[pos + 7] << 8) | raw[pos + 8]
            return width, height
        if marker in (0xD9, 0xDA) or length < 2:  # end of image / start of scan before any frame header
            return None
        pos += 2 + length
    return None


def check_image_size(width: int, height: int, what: str) -> None:
    """MessageError unless (width, height) is a positive size kd3d is willing to allocate."""
    if width <= 0 or height <= 0:
        raise MessageError(f"{what} has an empty size {width}x{height}")
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise MessageError(f"{what} claims {width}x{height} pixels, more than kd3d reads (at most "
                           f"{MAX_IMAGE_SIDE} a side and {MAX_IMAGE_PIXELS >> 20} Mpixel); the file is corrupt or "
                           "not a camera image")


class ImageFields(NamedTuple):
    """The payload fields of a sensor_msgs/Image (everything but the header)."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: np.ndarray


def _bytes_of(data: Any) -> np.ndarray:
    """A uint8 view of a message's data field (numpy array, bytes, array.array or list)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8)


def image_to_array(msg: Any) -> np.ndarray:
    """The pixels of a sensor_msgs/Image as (h, w) or (h, w, c) in the encoding's own dtype and channel order.

    Raises:
        MessageError: unsupported encoding, or data too short for height x step, or step < width x pixel size.
    """
    encoding = str(msg.encoding)
    if encoding not in ENCODINGS:
        raise MessageError(f"unsupported image encoding {encoding!r} (supported: {', '.join(ENCODINGS)})")
    dtype, channels = ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * dtype.itemsize
    data = _bytes_of(msg.data)
    check_image_size(width, height, f"image ({encoding})")
    if step < row_bytes:
        raise MessageError(f"image step {step} is smaller than width x pixel size = {row_bytes} ({encoding})")
    if data.size < step * (height - 1) + row_bytes:
        raise MessageError(f"image data has {data.size} bytes, expected {step * height} for "
                           f"{width}x{height} {encoding} with step {step}")
    rows = np.lib.stride_tricks.as_strided(data, shape=(height, row_bytes), strides=(step, 1))
    order = ">" if int(msg.is_bigendian) else "<"
    pixels = np.ascontiguousarray(rows).view(dtype.newbyteorder(order)).astype(dtype, copy=False)
    return pixels.reshape(height, width, channels) if channels > 1 else pixels.reshape(height, width)


def decode_image_rgb(msg: Any) -> np.ndarray:
    """A colour sensor_msgs/Image as RGB uint8 (h, w, 3); mono16 is scaled to 8 bits."""
    encoding = str(msg.encoding)
    if encoding not in COLOR_ENCODINGS:
        kind = "not a colour encoding" if encoding in ENCODINGS else "unsupported"
        raise MessageError(f"image encoding {encoding!r} is {kind} (supported colour encodings: "
                           f"{', '.join(COLOR_ENCODINGS)})")
    pixels = image_to_array(msg)
    if encoding == "mono16":
        gray = np.round(pixels.astype(np.float32) / 257.0).astype(np.uint8)
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    code = _TO_RGB[encoding]
    return np.ascontiguousarray(pixels) if code is None else cv2.cvtColor(pixels, code)


def depth_array_to_metres(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """Depth pixels of a depth encoding -> float32 metres, invalid (0, NaN, INF, negative) -> 0."""
    if encoding in ("16UC1", "mono16"):
        return pixels.astype(np.float32) * np.float32(0.001)
    if encoding == "32FC1":
        depth = pixels.astype(np.float32, copy=True)
        depth[~np.isfinite(depth) | (depth < 0)] = 0.0
        return depth
    raise MessageError(f"image encoding {encoding!r} is not a depth encoding "
                       f"(supported: {', '.join(DEPTH_ENCODINGS)})")


def decode_image_depth(msg: Any) -> np.ndarray:
    """A depth sensor_msgs/Image (16UC1/mono16 mm, 32FC1 m) as float32 metres (h, w), 0 = invalid."""
    encoding = str(msg.encoding)
    if encoding not in DEPTH_ENCODINGS:
        kind = "not a depth encoding" if encoding in ENCODINGS else "unsupported"
        raise MessageError(f"image encoding {encoding!r} is {kind} (supported depth encodings: "
                           f"{', '.join(DEPTH_ENCODINGS)})")
    return depth_array_to_metres(image_to_array(msg), encoding)


def _imdecode(msg: Any, flags: int, offset: int = 0) -> np.ndarray:
    data = _bytes_of(msg.data)[offset:]
    size = encoded_image_size(data) if data.size else None
    if size is not None:
        check_image_size(*size, what=f"compressed image (format {str(msg.format)!r})")
    try:
        image = cv2.imdecode(data, flags) if data.size else None
    except cv2.error as err:
        raise MessageError(f"cannot decode compressed image (format {str(msg.format)!r}): "
                           f"{' '.join(str(err).split())[:160]}") from err
    if image is None:
        raise MessageError(f"cannot decode compressed image (format {str(msg.format)!r}, {data.size} bytes)")
    return image


def _is_compressed_depth(fmt: str) -> bool:
    return "compresseddepth" in fmt.replace(" ", "").lower()


def decode_compressed_rgb(msg: Any) -> np.ndarray:
    """A sensor_msgs/CompressedImage (jpeg/png; formats like "rgb8; jpeg compressed bgr8") as RGB uint8."""
    fmt = str(msg.format).lower()
    if _is_compressed_depth(fmt):
        raise MessageError(f"compressed image format {msg.format!r} is depth, not colour")
    image = _imdecode(msg, cv2.IMREAD_UNCHANGED)
    if image.dtype == np.uint16:
        image = np.round(image.astype(np.float32) / 257.0).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    # Image files hold BGR for OpenCV; "compressed rgb8" means the publisher encoded RGB bytes as if BGR.
    swapped = fmt.rstrip().endswith("compressed rgb8") or fmt.rstrip().endswith("compressed rgba8")
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2RGB if swapped else cv2.COLOR_BGRA2RGB)
    return np.ascontiguousarray(image) if swapped else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_compressed_depth(msg: Any) -> np.ndarray:
    """A compressed depth image as float32 metres, 0 = invalid.

    Supports image_transport's compressedDepth ("16UC1; compressedDepth [png]": 12-byte header + PNG of mm;
    "32FC1; compressedDepth": PNG of quantised inverse depth) and plain 16-bit PNGs in millimetres.
    """
    fmt = str(msg.format)
    if not _is_compressed_depth(fmt):
        raw = _imdecode(msg, cv2.IMREAD_UNCHANGED)
        if raw.dtype != np.uint16 or raw.ndim != 2:
            raise MessageError(f"compressed depth image (format {fmt!r}) is not a 16-bit single-channel PNG")
        return depth_array_to_metres(raw, "16UC1")
    data = _bytes_of(msg.data)
    if data.size < 12:
        raise MessageError(f"compressedDepth image has only {data.size} bytes (no 12-byte header)")
    _, quant_a, quant_b = struct.unpack("<iff", data[:12].tobytes())
    raw = _imdecode(msg, cv2.IMREAD_UNCHANGED, offset=12)
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise MessageError(f"compressedDepth payload (format {fmt!r}) is not a 16-bit single-channel PNG")
    if fmt.split(";")[0].strip() == "32FC1":
        depth = np.zeros(raw.shape, np.float32)
        valid = raw > 0
        depth[valid] = quant_a / (raw[valid].astype(np.float32) - quant_b)
        return depth_array_to_metres(depth, "32FC1")
    return depth_array_to_metres(raw, "16UC1")


def image_input_topic(image_topic: str, compressed: bool) -> str:
    """The topic to read: image_transport publishes CompressedImage on `<image topic>/compressed`."""
    if compressed and not image_topic.rstrip("/").endswith("/compressed"):
        return image_topic.rstrip("/") + "/compressed"
    return image_topic


def is_compressed(msg: Any) -> bool:
    """True for a CompressedImage-like message (has `format`, no `encoding`)."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def decode_rgb(msg: Any) -> np.ndarray:
    """Image or CompressedImage -> RGB uint8 (h, w, 3)."""
    return decode_compressed_rgb(msg) if is_compressed(msg) else decode_image_rgb(msg)


def decode_depth(msg: Any) -> np.ndarray:
    """Image or CompressedImage depth -> float32 metres (h, w), 0 = invalid."""
    return decode_compressed_depth(msg) if is_compressed(msg) else decode_image_depth(msg)


# ----------------------------------------------------------------------------------------------- encoding
def rgb_to_image_fields(rgb: np.ndarray, encoding: str = "rgb8") -> ImageFields:
    """RGB uint8 (h, w, 3) -> Image payload in rgb8, bgr8, rgba8, bgra8 or mono8 (no row padding)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise MessageError(f"colour image must be uint8 (h, w, 3), got {rgb.dtype} {rgb.shape}")
    codes = {"rgb8": None, "bgr8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA, "bgra8": cv2.COLOR_RGB2BGRA,
             "mono8": cv2.COLOR_RGB2GRAY}
    if encoding not in codes:
        raise MessageError(f"cannot encode colour as {encoding!r} (supported: {', '.join(codes)})")
    pixels = rgb if codes[encoding] is None else cv2.cvtColor(rgb, codes[encoding])
    return _fields(np.ascontiguousarray(pixels), encoding)


def depth_to_image_fields(depth_m: np.ndarray, encoding: str = "32FC1") -> ImageFields:
    """Depth in metres (h, w) -> Image payload: 32FC1 (metres, invalid = NaN) or 16UC1 (mm, invalid = 0)."""
    depth = np.asarray(depth_m, dtype=np.float32)
    if depth.ndim != 2:
        raise MessageError(f"depth must be (h, w), got shape {depth.shape}")
    invalid = ~np.isfinite(depth) | (depth <= 0)
    if encoding == "32FC1":
        pixels = np.where(invalid, np.float32(np.nan), depth).astype("<f4")
    elif encoding == "16UC1":
        mm = np.round(np.where(invalid, 0.0, depth) * 1000.0)
        pixels = np.clip(mm, 0, 65535).astype("<u2")
    else:
        raise MessageError(f"cannot encode depth as {encoding!r} (supported: 32FC1, 16UC1)")
    return _fields(pixels, encoding)


def _fields(pixels: np.ndarray, encoding: str) -> ImageFields:
    h, w = pixels.shape[:2]
    data = np.frombuffer(pixels.tobytes(), dtype=np.uint8)
    return ImageFields(height=h, width=w, encoding=encoding, is_bigendian=0, step=data.size // h, data=data)


def build_image(fields: ImageFields, stamp_ns: int, frame_id: str, typestore: Any = None) -> Any:
    """sensor_msgs/msg/Image from a payload (see rgb_to_image_fields, depth_to_image_fields)."""
    factory = as_factory(typestore)
    return factory.make("sensor_msgs/msg/Image", header=build_header(factory, stamp_ns, frame_id),
                        height=fields.height, width=fields.width, encoding=fields.encoding,
                        is_bigendian=fields.is_bigendian, step=fields.step, data=fields.data)


def encode_compressed_rgb(rgb: np.ndarray, fmt: str = "jpeg", jpeg_quality: int = 95) -> tuple[str, np.ndarray]:
    """RGB uint8 -> (format string, bytes) as image_transport's compressed publisher writes them."""
    if fmt not in ("jpeg", "png"):
        raise MessageError(f"compressed format must be jpeg or png, not {fmt!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise MessageError(f"OpenCV could not encode a {rgb.shape} image as {fmt}")
    return f"rgb8; {fmt} compressed bgr8", buf.reshape(-1)


def encode_compressed_depth(depth_m: np.ndarray) -> tuple[str, np.ndarray]:
    """Depth in metres -> ("16UC1; compressedDepth png", header + PNG of millimetres), as image_transport."""
    mm = depth_to_image_fields(depth_m, "16UC1")
    ok, buf = cv2.imencode(".png", mm.data.view("<u2").reshape(mm.height, mm.width))
    if not ok:
        raise MessageError("OpenCV could not encode the depth PNG")
    header = np.frombuffer(struct.pack("<iff", 1, 0.0, 0.0), dtype=np.uint8)
    return "16UC1; compressedDepth png", np.concatenate([header, buf.reshape(-1)])


def build_compressed_image(fmt: str, data: np.ndarray, stamp_ns: int, frame_id: str, typestore: Any = None) -> Any:
    """sensor_msgs/msg/CompressedImage from (format, bytes) (see encode_compressed_rgb / _depth)."""
    factory = as_factory(typestore)
    return factory.make("sensor_msgs/msg/CompressedImage", header=build_header(factory, stamp_ns, frame_id),
                        format=fmt, data=np.asarray(data, dtype=np.uint8))
