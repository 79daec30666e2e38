"""The ``one_thread`` fixture for test modules that run tiny models; import it to use it.

Kept out of conftest.py so that only the modules that ask for it change torch's thread count.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and far faster when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
