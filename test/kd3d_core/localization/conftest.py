"""Fixtures of the localization tests (the real-model room, fast_room, is in test/conftest.py)."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
