from __future__ import annotations

from pathlib import Path

import pytest

from tests.generate.test_dialogue import bwrap_or_skip, tiny_wheel


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    """A local wheelhouse with one tiny package: the dialogues' pip-install turns run offline from it."""
    bwrap_or_skip()
    folder = tmp_path_factory.mktemp("wheels")
    tiny_wheel(folder)
    return folder
