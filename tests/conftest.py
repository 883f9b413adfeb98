import os

import pytest
import torch

# Tests run on CPU with a fixed thread count so numbers are reproducible across machines.
torch.set_num_threads(int(os.environ.get("MODEBENCH_TEST_THREADS", min(2, os.cpu_count() or 1))))


@pytest.fixture
def results_root(tmp_path, monkeypatch):
    root = tmp_path / "results"
    monkeypatch.setenv("MODEBENCH_RESULTS", str(root))
    return root
