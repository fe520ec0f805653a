"""Suite-wide test settings: offline, single-threaded torch (tests may run beside a server or a browser)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_configure(config):
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency, but keep collection honest
        return
    torch.set_num_threads(1)
