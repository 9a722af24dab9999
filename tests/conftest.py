"""Shared test settings: one thread and a fixed seed for every test.

The tests run tiny models, for which thread start-up costs more than the work: on a 2-core machine
one thread is several times faster than two.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)  # also after a test that changed it
