"""Training on a device (`pipelines.training`): the ``--device``/``--amp`` settings, the batch-moving helper, CPU-only
checkpoints, and the typed errors for a GPU torch cannot use. This machine has no GPU, so CUDA is faked only where
the code merely decides (``torch.cuda.is_available``/``device_count``), never to run a kernel."""

from __future__ import annotations

import collections
import dataclasses
import hashlib

import pytest
import torch
from wm_training_helpers import FAST, TINY_CROP, TINY_SEG, tiny_cohort

from models.errors import ConfigError, DeviceUnavailableError
from pipelines import training
from pipelines.cli import main
from pipelines.training import (STATE_FILE, LoopSettings, device_description, model_device, resolve_device,
                                to_device)
from pipelines.worldmodel import train as wm_train
from pipelines.worldmodel.train import train_segmentation


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return tiny_cohort(tmp_path_factory)


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _segment(cohort, out, **kw):
    return train_segmentation(cohort, out, steps=2, batch_size=2, progress=False, schedule=FAST, model_config=TINY_SEG,
                              crop=TINY_CROP, **kw)


# ------------------------------------------------------------------------------------------------ to_device
Pair = collections.namedtuple("Pair", "image label")


@dataclasses.dataclass(frozen=True)
class Batch:
    x: torch.Tensor
    plans: list
    name: str = "b"


def test_to_device_moves_every_tensor_in_nested_containers_and_keeps_the_rest():
    t = torch.arange(3.0)
    obj = {"x": t, "pairs": [Pair(t, 7), (t, "text")], "batch": Batch(t, ["Plan A"]), "n": 3, "none": None}
    moved = to_device(obj, "meta")  # a real second device on a CPU-only machine
    assert moved["x"].device.type == "meta" and moved["x"].shape == (3,)
    assert isinstance(moved["pairs"][0], Pair) and moved["pairs"][0].image.device.type == "meta"
    assert moved["pairs"][0].label == 7
    assert isinstance(moved["pairs"][1], tuple) and moved["pairs"][1][1] == "text"
    assert moved["pairs"][1][0].device.type == "meta"
    assert isinstance(moved["batch"], Batch) and moved["batch"].x.device.type == "meta"
    assert moved["batch"].plans == ["Plan A"] and moved["batch"].name == "b"
    assert moved["n"] == 3 and moved["none"] is None
    assert obj["x"].device.type == "cpu", "the input is not changed"
    assert to_device("plain", "meta") == "plain" and to_device(5, "meta") == 5


def test_to_device_on_the_same_device_returns_the_same_objects():
    t = torch.ones(2)
    obj = {"a": [t, (t, 1)], "b": Batch(t, ["p"])}
    assert to_device(obj, "cpu") is obj  # the CPU path copies nothing (bit for bit as before)
    assert to_device(t, torch.device("cpu")) is t


def test_model_device_is_where_the_parameters_are():
    assert model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(torch.nn.Identity()) == torch.device("cpu")  # no parameters: the CPU
    assert model_device(torch.nn.Linear(2, 2, device="meta")).type == "meta"


# ------------------------------------------------------------------------------------------------ resolve_device
def test_cpu_and_auto_without_a_gpu_are_the_cpu(no_cuda):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:1"])
def test_a_requested_gpu_without_one_is_a_typed_error_not_a_cpu_run(spec, no_cuda):
    with pytest.raises(DeviceUnavailableError, match=f"--device {spec}: torch sees no CUDA GPU"):
        resolve_device(spec)


def test_a_gpu_index_beyond_the_gpus_present_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("auto") == torch.device("cuda", 0)
    with pytest.raises(DeviceUnavailableError, match=r"has 1 CUDA GPU\(s\) \(cuda:0 to cuda:0\)"):
        resolve_device("cuda:3")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "mps", ""])
def test_unknown_device_values_are_refused(spec):
    with pytest.raises(ConfigError, match="--device must be cpu, cuda, cuda:N or auto"):
        resolve_device(spec)
    with pytest.raises(ConfigError, match="--device must be"):
        LoopSettings(steps=1, batch_size=1, lr=1e-3, device=spec)


def test_amp_on_a_cpu_without_native_bf16_is_refused(no_cuda, monkeypatch):
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(DeviceUnavailableError, match="--amp .* native bfloat16 units .* slower than float32"):
        resolve_device("cpu", amp=True)
    with pytest.raises(DeviceUnavailableError, match="--amp"):
        resolve_device("auto", amp=True)


def test_amp_on_a_cpu_with_native_bf16_runs_on_the_cpu(no_cuda, monkeypatch):
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: True)
    assert resolve_device("cpu", amp=True) == torch.device("cpu")
    assert resolve_device("auto", amp=True) == torch.device("cpu")
    assert "bf16 autocast" in training.device_description("cpu", amp=True)


@pytest.mark.skipif(not training.cpu_has_native_bf16(), reason="this CPU has no native bfloat16 units")
def test_amp_trains_on_a_cpu_with_native_bf16(cohort, tmp_path, no_cuda):
    """bf16 autocast on the CPU (AMX / AVX512-BF16): finite losses, float32 weights, and the card says so."""
    report = _segment(cohort, tmp_path / "seg", amp=True)
    assert torch.isfinite(torch.tensor(report.final_train_loss))
    weights = torch.load(report.out / "model.pt", map_location="cpu", weights_only=True)
    assert all(t.dtype == torch.float32 for t in weights.values() if t.is_floating_point())
    assert "bf16 autocast" in (report.out / "MODEL_CARD.md").read_text()


def test_native_bf16_query_answers_a_bool():
    assert isinstance(training.cpu_has_native_bf16(), bool)


def test_device_and_amp_are_not_part_of_a_runs_identity():
    """A run may resume on another device (states are CPU tensors)."""
    base = LoopSettings(steps=3, batch_size=2, lr=1e-3)
    other = LoopSettings(steps=3, batch_size=2, lr=1e-3, device="auto", amp=True)
    assert base.device == "cpu" and base.identity() == other.identity()


# ------------------------------------------------------------------------------------------------ the loop
def test_explicit_cpu_trains_exactly_as_the_default(cohort, tmp_path):
    default = _segment(cohort, tmp_path / "default")
    cpu = _segment(cohort, tmp_path / "cpu", device="cpu")
    assert cpu.device == default.device == "cpu"
    assert (cpu.final_train_loss, cpu.final_val_loss) == (default.final_train_loss, default.final_val_loss)
    digest = [hashlib.sha256((r.out / "model.pt").read_bytes()).hexdigest() for r in (default, cpu)]
    assert digest[0] == digest[1]
    card = (cpu.out / "MODEL_CARD.md").read_text()
    assert f"{device_description('cpu')}; trained" in card and "torch thread(s), CPU" in card
    assert "Start: seeded random weights (seed 0)" in card


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def test_saved_states_and_checkpoints_hold_cpu_tensors_only(cohort, tmp_path, monkeypatch):
    moved_to = []
    real = training.to_device

    def spy(obj, device):
        moved_to.append(str(device))
        return real(obj, device)

    monkeypatch.setattr(training, "to_device", spy)
    report = _segment(cohort, tmp_path / "seg")
    assert "cpu" in moved_to, "train_state.pt goes through to_device(..., 'cpu') before torch.save"
    state = torch.load(report.out / STATE_FILE, map_location="cpu", weights_only=False)
    weights = torch.load(report.out / "model.pt", map_location="cpu", weights_only=True)
    tensors = list(_tensors(state["model"])) + list(_tensors(state["optimiser"])) + list(_tensors(weights))
    assert len(tensors) > 10 and all(t.device.type == "cpu" for t in tensors)


def test_a_gpu_request_fails_before_any_crop_is_made(cohort, tmp_path, no_cuda, monkeypatch):
    with pytest.raises(DeviceUnavailableError, match="--device cuda"):
        _segment(cohort, tmp_path / "seg", device="cuda", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "seg").exists()
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(DeviceUnavailableError, match="--amp"):
        _segment(cohort, tmp_path / "seg", amp=True, cache_dir=tmp_path / "cache")


@pytest.fixture
def tiny_defaults(monkeypatch):
    monkeypatch.setattr(wm_train, "MODEL_CONFIGS", {"autoencoder": {}, "segmentation": TINY_SEG, "dynamics": {}})
    monkeypatch.setattr(wm_train, "DEFAULT_CROP", TINY_CROP)


def test_cli_device_flags_give_one_line_errors(cohort, tmp_path, tiny_defaults, no_cuda, capsys, monkeypatch):
    base = ["--manifest", str(cohort), "--out", str(tmp_path / "s"), "--quiet"]
    assert main(["train", "segmentation", *base, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device cuda: torch sees no CUDA GPU" in err
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: False)
    assert main(["train", "segmentation", *base, "--amp"]) == 2
    assert "--amp (bf16 autocast) on the CPU needs native bfloat16 units" in capsys.readouterr().err
    assert main(["train", "survival", "--kind", "cox", *base, "--device", "cuda"]) == 2
    assert "--device are for `--kind deep` only" in capsys.readouterr().err
    assert main(["train", "survival", "--kind", "deep", *base, "--device", "cuda:0"]) == 2
    assert "--device cuda:0: torch sees no CUDA GPU" in capsys.readouterr().err
    assert main(["train", "segmentation", *base, "--device", "cpu", "--steps", "1", "--batch-size", "2"]) == 0


# ------------------------------------------------------------------------------------------------ on a real GPU
# Skipped on this project's CPU-only machines; run them where torch sees a CUDA GPU:
#   .venv/bin/python -m pytest -q tests/pipelines/worldmodel/test_training_device.py -k gpu
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_gpu
def test_gpu_training_saves_cpu_tensors_and_resumes_on_the_cpu(cohort, tmp_path):
    first = _segment(cohort, tmp_path / "seg", device="cuda")
    assert first.device.startswith("cuda") and "on cuda:" in (first.out / "MODEL_CARD.md").read_text()
    state = torch.load(first.out / STATE_FILE, map_location="cpu", weights_only=False)
    assert all(t.device.type == "cpu" for t in _tensors([state["model"], state["optimiser"]]))
    resumed = train_segmentation(cohort, tmp_path / "seg", steps=4, batch_size=2, progress=False, schedule=FAST,
                                 model_config=TINY_SEG, crop=TINY_CROP, resume=True, device="cpu")
    assert resumed.start_step == 2 and resumed.device == "cpu" and resumed.final_val_loss > 0


@needs_gpu
def test_gpu_training_follows_the_cpu_run_and_amp_runs(cohort, tmp_path):
    cpu = _segment(cohort, tmp_path / "cpu")
    gpu = _segment(cohort, tmp_path / "gpu", device="cuda")
    # same start and batches; cuDNN convolutions may use TF32, hence the tolerance
    assert gpu.final_train_loss == pytest.approx(cpu.final_train_loss, rel=1e-2)
    amp = _segment(cohort, tmp_path / "amp", device="cuda", amp=True)
    assert amp.final_train_loss == pytest.approx(cpu.final_train_loss, rel=5e-2)
    assert "bf16 autocast" in (amp.out / "MODEL_CARD.md").read_text()


@needs_gpu
def test_gpu_dynamics_training(cohort, tmp_path_factory, tmp_path):
    from wm_training_helpers import TINY_DYN, tiny_autoencoder

    from pipelines.worldmodel.train import train_dynamics

    report = train_dynamics(cohort, tiny_autoencoder(tmp_path_factory), tmp_path / "dyn", steps=2, batch_size=2,
                            progress=False, schedule=FAST, model_config=TINY_DYN, device="cuda", amp=True)
    assert report.device.startswith("cuda") and report.final_val_loss > 0
