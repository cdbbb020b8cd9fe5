"""Test isolation shared by every test file."""
import os

import pytest


@pytest.fixture(autouse=True)
def _restore_environ():
    """Put ``os.environ`` back after every test: a ``DWT_DATA_DIR`` left behind by a data-pipeline test (seen after
    the 2-process build in test_row_groups, although it sets it with monkeypatch) made later tests read a
    temporary mirror: test_sources' re-cut check skipped and the gpu-profile run failed when run after it."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)
