"""Shared test settings."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The test models are tiny: a second intra-op thread buys nothing and, on a busy 2-core
    # machine (CI's), makes each step several times slower. Restored at the end of the session.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
