"""Fixtures of the reasoning tests: tiny random models built once per session (see reasoning_helpers.py)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reasoning_helpers import (write_tiny_causal_lm, write_tiny_encoder, write_tiny_prm,  # noqa: E402
                               write_tiny_token_prm)


@pytest.fixture(scope="session")
def tiny_causal_lm(tmp_path_factory) -> Path:
    return write_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(scope="session")
def tiny_token_prm(tmp_path_factory) -> Path:
    return write_tiny_token_prm(tmp_path_factory.mktemp("tiny_prm"))


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    return write_tiny_encoder(tmp_path_factory.mktemp("tiny_encoder"))


@pytest.fixture(scope="session")
def tiny_prm_dir(tmp_path_factory, tiny_encoder) -> Path:
    return write_tiny_prm(tmp_path_factory.mktemp("tiny_prm_head"), tiny_encoder)
