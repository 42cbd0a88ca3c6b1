"""Shared pieces of the tests/test_probes_*.py files."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Probe tests run many tiny forwards; on a shared 2-core machine two intra-op threads per
    process oversubscribe the cores and make each small matmul many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
