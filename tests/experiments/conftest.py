"""Shared settings of the experiment tests: one torch thread (a loaded 2-core machine is
far slower with two), and a per-session cache for text embeddings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def embed_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder for MiniLM embeddings shared by the tests of one session."""
    return tmp_path_factory.mktemp("lossrate-cache")
