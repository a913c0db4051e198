"""What is in a bag or a scene folder, as a JSON-ready dict and as aligned text (`kd3d info`)."""
from __future__ import annotations

from pathlib import Path

from kd3d_core.errors import Kd3dError
from kd3d_core.scene import Split, open_scene


def is_bag_path(path: Path) -> bool:
    """True for a ROS 1 .bag file or a rosbag2 folder (metadata.yaml) or a file inside one."""
    path = Path(path)
    if path.is_file():
        return path.suffix == ".bag" or (path.parent / "metadata.yaml").is_file()
    return (path / "metadata.yaml").is_file()


def summarize_bag(path: Path | str) -> dict:
    """Storage, duration, message count and per-topic type, count and rate (Hz, from receive times).

    Rates need each topic's first and last receive time, so every message is scanned once (not decoded).
    """
    from kd3d_core.bags import open_bag

    with open_bag(path) as bag:
        topics = bag.topics
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        for topic, _, log_ns, _ in bag.raw_messages(list(topics)):
            first.setdefault(topic, log_ns)
            last[topic] = log_ns
        rows = []
        for name, t in topics.items():
            span = (last.get(name, 0) - first.get(name, 0)) / 1e9
            rate = (t.count - 1) / span if t.count > 1 and span > 0 else None
            rows.append({"topic": name, "type": t.msgtype, "count": t.count,
                         "rate_hz": None if rate is None else round(rate, 3)})
        return {"kind": "bag", "path": str(bag.path), "storage": bag.storage.value,
                "start_ns": bag.start_ns, "end_ns": bag.end_ns,
                "duration_s": round((bag.end_ns - bag.start_ns) / 1e9, 6) if bag.message_count else 0.0,
                "messages": bag.message_count, "topics": rows, "tf": _tf_summary(bag)}


def _tf_summary(bag) -> dict:
    """TF frames, and per image topic the chain to its frame and the pose chain ingest/replay would use."""
    from kd3d_core.bags import IMAGE_TYPES, load_tf
    from kd3d_core.ingest import discover_pose_tf

    tf = load_tf(bag)
    cameras = []
    for topic in bag.topics_of_type(IMAGE_TYPES):
        first = next(bag.messages([topic]), None)
        frame = str(first.msg.header.frame_id).lstrip("/") if first is not None else ""
        chain = list(reversed(tf.ancestors(frame))) if frame in tf.frames else []
        pose = discover_pose_tf(tf, frame) if frame else None
        cameras.append({"topic": topic, "frame": frame, "chain": chain,
                        "pose_tf": list(pose) if pose else None})
    return {"frames": sorted(tf.frames), "cameras": cameras}


def summarize_scene(path: Path | str) -> dict:
    """Layout, frames per split, resolution, K, depth and pose coverage, timestamp span."""
    scene = open_scene(path)
    frames = scene.frames
    K = scene.info.K
    stamps = [f.stamp_ns for f in frames if f.stamp_ns is not None]
    return {
        "kind": "scene", "path": str(scene.root), "layout": scene.info.layout, "sensor": scene.info.sensor,
        "world_frame": scene.info.world_frame, "frames": len(frames),
        "splits": {s.value: len(scene.split(s)) for s in (Split.MAPPING, Split.QUERY)},
        "resolution": list(scene.info.color_size),
        "K": {"fx": float(K[0, 0]), "fy": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2])},
        "depth_frames": sum(1 for f in frames if f.depth_path is not None),
        "depth_shift": scene.info.depth_shift,
        "posed_frames": sum(1 for f in frames if f.has_pose),
        "timestamps": None if not stamps else {"count": len(stamps), "first_ns": min(stamps),
                                               "last_ns": max(stamps),
                                               "span_s": round((max(stamps) - min(stamps)) / 1e9, 6)},
        "source": scene.info.extra.get("source"),
    }


def summarize_model(path: Path | str) -> dict:
    """What a .kd3d scene model is: student, file size, input, world frame, teacher, mapping frames."""
    from kd3d_core.students.model_file import read_model_meta

    meta = read_model_meta(path)
    mapping = meta.teacher.get("mapping") or {}
    stamps = [s for s in mapping.get("stamps_ns", []) if s is not None]
    return {"kind": "model", "path": str(path), "size_mb": round(Path(path).stat().st_size / 2**20, 2),
            "student": meta.architecture, "head": meta.config.get("head"), "input_size": list(meta.input_size),
            "output_stride": meta.output_stride, "world_frame": meta.world_frame,
            "mapping_up": None if meta.mapping_up is None else list(meta.mapping_up),
            "teacher": meta.teacher.get("teacher"), "scale_source": meta.teacher.get("scale_source"),
            "mapping_frames": mapping.get("frames", meta.teacher.get("frames", meta.teacher.get("frames_labelled"))),
            "mapping_stamps": None if not stamps else {"first_ns": min(stamps), "last_ns": max(stamps)},
            "training": meta.training, "format_version": meta.format_version}


def summarize(path: Path | str) -> dict:
    """summarize_bag, summarize_scene or summarize_model, whichever `path` is."""
    path = Path(path)
    if not path.exists():
        raise Kd3dError(f"{path} does not exist")
    if path.is_file() and path.suffix == ".kd3d":
        return summarize_model(path)
    if is_bag_path(path):
        return summarize_bag(path)
    if path.is_file():
        raise Kd3dError(f"{path} is a file but neither a .kd3d model nor a bag; `kd3d info` takes a bag, a scene "
                        "folder or a .kd3d model")
    return summarize_scene(path)


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in rows]


def _pairs(items: list[tuple[str, str]]) -> list[str]:
    width = max(len(k) for k, _ in items)
    return [f"{k + ':':<{width + 1}} {v}" for k, v in items]


def format_bag(s: dict) -> str:
    """Aligned text for a bag summary."""
    lines = _pairs([("bag", s["path"]), ("storage", s["storage"]), ("duration", f"{s['duration_s']:.3f} s"),
                    ("start", f"{format_stamp(s['start_ns'])} s"), ("end", f"{format_stamp(s['end_ns'])} s"),
                    ("messages", str(s["messages"]))])
    rows = [["topic", "type", "count", "rate"]]
    for t in s["topics"]:
        rate = "-" if t["rate_hz"] is None else f"{t['rate_hz']:.2f} Hz"
        rows.append([t["topic"], t["type"], str(t["count"]), rate])
    return "\n".join(lines + [""] + _table(rows, right={2, 3}) + [""] + _format_tf(s.get("tf")))


def _format_tf(tf: dict | None) -> list[str]:
    if not tf:
        return []
    lines = [f"TF frames: {', '.join(tf['frames']) or 'none (no /tf or /tf_static)'}"]
    for cam in tf["cameras"]:
        chain = " -> ".join(cam["chain"]) if len(cam["chain"]) > 1 else "not in TF"
        pose = (f"poses from TF {cam['pose_tf'][0]} -> {cam['pose_tf'][1]} (found automatically)" if cam["pose_tf"]
                else "no map -> camera chain: give --pose-tf PARENT CHILD or --pose-topic")
        lines.append(f"{cam['topic']} (frame {cam['frame'] or '?'}): TF {chain}; ingest/replay: {pose}")
    return lines


def format_scene(s: dict) -> str:
    """Aligned text for a scene summary."""
    n = max(s["frames"], 1)
    K = s["K"]
    items = [("scene", s["path"]), ("layout", s["layout"]), ("sensor", s["sensor"]), ("world frame", s["world_frame"]),
             ("frames", f"{s['frames']} (mapping {s['splits']['mapping']}, query {s['splits']['query']})"),
             ("resolution", f"{s['resolution'][0]}x{s['resolution'][1]}"),
             ("K", f"fx={K['fx']:.3f} fy={K['fy']:.3f} cx={K['cx']:.3f} cy={K['cy']:.3f}"),
             ("depth", f"{s['depth_frames']} frames ({100 * s['depth_frames'] / n:.0f}%), shift {s['depth_shift']:g}"
              if s["depth_frames"] else "none"),
             ("poses", f"{s['posed_frames']} of {s['frames']} frames ({100 * s['posed_frames'] / n:.0f}%)")]
    ts = s["timestamps"]
    items.append(("timestamps", "none" if ts is None else
                  f"{ts['count']} frames, {format_stamp(ts['first_ns'])} .. {format_stamp(ts['last_ns'])} s "
                  f"(span {ts['span_s']:.3f} s)"))
    if s.get("source"):
        src = s["source"]
        items.append(("source", (f"{src.get('bag')} ({src.get('storage')}, {src.get('image_topic')}, "
                                 f"poses from {src.get('pose_source')})")))
    return "\n".join(_pairs(items))


def format_stamp(stamp_ns: int) -> str:
    """Nanosecond stamp as seconds with exactly nine decimals (no float rounding: 1700000035.100000000)."""
    sign = "-" if stamp_ns < 0 else ""
    return f"{sign}{abs(stamp_ns) // 10**9}.{abs(stamp_ns) % 10**9:09d}"


def format_model(s: dict) -> str:
    """Aligned text for a model summary."""
    w, h = s["input_size"]
    span = s["mapping_stamps"]
    items = [("model", s["path"]), ("size", f"{s['size_mb']:.2f} MB"),
             ("student", s["student"] + (f" ({s['head']} head)" if s.get("head") else "")),
             ("input", f"{w}x{h} RGB (any image is resized to it), output stride {s['output_stride']}"),
             ("camera", "any: each image's own intrinsics are used for PnP"),
             ("world frame", s["world_frame"]),
             ("mapping up", "unknown (no rolled-camera second look)" if s.get("mapping_up") is None else
              "(" + ", ".join(f"{v:.3f}" for v in s["mapping_up"]) + ") in the world frame"),
             ("teacher", f"{s['teacher']} (scale: {s['scale_source']})"),
             ("mapping frames", f"{s['mapping_frames']}" + ("" if span is None else
                                f", stamps {format_stamp(span['first_ns'])} .. {format_stamp(span['last_ns'])} s"))]
    return "\n".join(_pairs(items))


def format_summary(s: dict) -> str:
    """Aligned text for any kind of summary."""
    return {"bag": format_bag, "scene": format_scene, "model": format_model}[s["kind"]](s)

