"""Fixtures of the training tests: a tiny preprocessing output directory (see
`training_records`). Needs no Beam, OpenCV or MediaPipe; on a machine without them run
`pytest --confcutdir=tests/training tests/training` (the top-level conftest imports cv2)."""

from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
for path in (os.path.dirname(os.path.dirname(HERE)), HERE):
    if path not in sys.path:
        sys.path.insert(0, path)

from training_records import write_dataset  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    """A tiny preprocessing output directory (train and validation splits)."""
    return write_dataset(str(tmp_path_factory.mktemp("tiny_data")))
