from __future__ import annotations

import copy
from importlib import resources
from typing import Any

import pytest

from siyu.programme import rules


def example_text() -> str:
    return resources.files("siyu.programme").joinpath("example.yaml").read_text("utf-8")


_EXAMPLE, _ = rules.parse_text(example_text())


@pytest.fixture
def doc() -> dict[str, Any]:
    """A fresh copy of the demo brand's example document, to change in a test."""
    return copy.deepcopy(_EXAMPLE)
