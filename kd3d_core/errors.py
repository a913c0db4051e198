"""The one exception family of kd3d.

Library code converts low-level failures (I/O, decoding, bad numbers) into one of these at module boundaries
(`raise Kd3dError(...) from err`) so the CLI can print a single clear line and exit non-zero.
"""


class Kd3dError(Exception):
    """Base class of every error kd3d reports to a user."""


class SceneError(Kd3dError):
    """A scene folder is missing, malformed or inconsistent."""


class BagError(Kd3dError):
    """A bag is missing, corrupt, or lacks what was asked of it (topics, frames, poses)."""


class MessageError(Kd3dError):
    """A ROS message cannot be decoded (unsupported encoding, wrong size, ...)."""


class ConfigError(Kd3dError):
    """An option or parameter has an invalid value."""


class ModelError(Kd3dError):
    """A model or checkpoint file is missing, malformed, tampered with, or unsafe to load."""
