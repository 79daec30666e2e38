"""The ``one_thread`` fixture for test modules that run tiny models; import it to use it.

Kept out of conftest.py so that only the modules that ask for it change torch's thread count.
"""

from __future__ import annotations

import pytest
import torch
from toy_models import toy_threads


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and far faster when other jobs share the cores
    (``LIT_QWEN3_TEST_THREADS`` overrides it, to see whether a learning test depends on it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(toy_threads(1))
    yield
    torch.set_num_threads(threads)
