"""Helpers for the frozen config dataclasses of every component."""
from __future__ import annotations

from enum import Enum

from kd3d_core.errors import ConfigError


def coerce_enum_fields(config: object, fields: dict[str, type[Enum]], component: str) -> None:
    """In a frozen dataclass's __post_init__: turn string values of enum fields into their enums.

    Raises ConfigError naming the component, the field and the valid choices when a value is not one of them.
    """
    for name, enum_type in fields.items():
        value = getattr(config, name)
        if isinstance(value, enum_type):
            continue
        try:
            object.__setattr__(config, name, enum_type(value))
        except ValueError as err:
            choices = ", ".join(str(e.value) for e in enum_type)
            raise ConfigError(f"{component} {name} must be one of {choices}, got {value!r}") from err
