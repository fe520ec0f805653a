"""The one training loop of MeWM Workbench's networks: seeded, resumable, logged, validated on held-out cases.

`split_cases` makes the fixed train/validation split of a cohort (a seeded permutation of the sorted case ids; the
last ``val_fraction`` are held out, whatever the training seed, so every model of the world model holds out the
same cases). `train_loop` builds a model and trains it for a number of steps on a ``batch_loss(model, generator)``:

1. ``torch.manual_seed(seed)``, then the model is built (seeded initial weights), and a ``torch.Generator`` seeded
   with ``seed`` draws batches, flips and noise; on resume, model, optimiser, step, both RNG states and the running
   loss come back from ``<out>/train_state.pt``, so a resumed run gives the same weights as an uninterrupted one;
2. each step: loss → backward → gradient clipping → AdamW; a non-finite loss stops with `ModelOutputError`;
3. every ``log_every`` steps a line ``{"step", "loss", "seconds"}`` in ``<out>/train_log.jsonl``; every
   ``val_every`` steps and at the end ``{"step", "val_loss"}`` (validation runs under a forked RNG, so it never
   changes the training's random stream); every ``checkpoint_every`` steps and at the end ``train_state.pt``;
4. at the end ``before_save(model)`` (e.g. the autoencoder's latent scale) and `models.checkpoint.save_checkpoint`.

Devices (``LoopSettings.device``: ``"cpu"`` by default, ``"cuda"``, ``"cuda:N"``, ``"auto"``): the model is built on
the CPU (so the same seed gives the same initial weights everywhere), then moved to the device. Batches are still
drawn on the CPU with the CPU generator, so a GPU run sees the same batches, flips and noise as a CPU run; the
trainers move them with `to_device` to `model_device(model)`. ``train_state.pt`` and the checkpoint always hold CPU
tensors and are read with ``map_location="cpu"``, so a GPU run resumes on a CPU machine and back (the device is not
part of a run's identity). A CUDA device torch cannot use is a `DeviceUnavailableError`, never a silent CPU run.
``amp`` runs the losses under bf16 autocast (CUDA GPUs with bf16, or CPUs with native bf16 units: AMX /
AVX512-BF16, `cpu_has_native_bf16`); gradients, optimiser and checkpoints stay float32.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.checkpoint import save_checkpoint
from models.errors import ConfigError, DeviceUnavailableError, ManifestError, ModelOutputError
from pipelines.progress import ProgressFn, resolve_progress

__all__ = ["SPLIT_SEED", "CaseSplit", "split_cases", "LoopSettings", "TrainReport", "train_loop", "STATE_FILE",
           "LOG_FILE", "resolve_device", "to_device", "model_device", "device_description"]

SPLIT_SEED = 0
STATE_FILE = "train_state.pt"
LOG_FILE = "train_log.jsonl"


# ------------------------------------------------------------------------------------------------ the split
@dataclass(frozen=True)
class CaseSplit:
    """Positions (into the list given to `split_cases`) and ids of the training and held-out validation cases."""

    train: list[int]
    val: list[int]
    train_ids: list[str]
    val_ids: list[str]


def split_cases(case_ids: Sequence[str], *, val_fraction: float = 0.1, min_train: int = 2,
                source: str = "the manifest", skipped: Sequence[dict] = ()) -> CaseSplit:
    """Hold out the last ``val_fraction`` (at least one) of a `SPLIT_SEED` permutation of the sorted case ids.

    Args:
        case_ids: the usable cases, in cache order.
        source: names the data in the error message; ``skipped``: left-out cases (``case_id``, ``reason``) to list.

    Raises:
        ManifestError: fewer than ``min_train + 1`` usable cases.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"split_cases: val_fraction must be in (0, 1), got {val_fraction!r}.")
    from pipelines.cohort.followups import patient_of

    # rows of one patient (extra simulated follow-ups, `pipelines.cohort.followups`) stay on one side of the split;
    # with one row per patient this is the plain split of the case ids
    patients = sorted({patient_of(c) for c in case_ids})
    n = len(patients)
    n_val = max(1, int(round(val_fraction * n)))
    if n - n_val < min_train:
        why = "; ".join(f"{s['case_id']}: {s['reason']}" for s in list(skipped)[:5])
        raise ManifestError(
            f"{source} has {n} usable case(s){f' ({len(skipped)} skipped: {why})' if skipped else ''}; training "
            f"needs at least {min_train + n_val} ({min_train} to train, {n_val} held out). Generate a larger cohort "
            "with `mewm cohort generate --n 200 --out DIR` or add cases with a tumour mask and a post-treatment "
            "pair.")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    val_patients = {patients[p] for p in perm[n - n_val:]}
    val = [i for i in range(len(case_ids)) if patient_of(case_ids[i]) in val_patients]
    train = [i for i in range(len(case_ids)) if patient_of(case_ids[i]) not in val_patients]
    return CaseSplit(train, val, [case_ids[i] for i in train], [case_ids[i] for i in val])


# ------------------------------------------------------------------------------------------------ devices
_DEVICE_SPEC = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")


def _check_device_spec(spec: str, flag: str = "--device") -> str:
    if not isinstance(spec, str) or not _DEVICE_SPEC.match(spec.strip().lower()):
        raise ConfigError(f"{flag} must be cpu, cuda, cuda:N or auto; got {spec!r}.")
    return spec.strip().lower()


def resolve_device(spec: str = "cpu", *, amp: bool = False, flag: str = "--device") -> torch.device:
    """The torch device of a ``--device`` value: ``cpu``, ``cuda`` (the current GPU), ``cuda:N``, or ``auto`` (CUDA
    when torch sees a GPU, else the CPU).

    Raises:
        ConfigError: an unknown value.
        DeviceUnavailableError: CUDA asked for (or ``--amp``) where torch has no usable GPU, or ``cuda:N`` beyond the
            GPUs present. The CPU is never used in place of a requested GPU.
    """
    spec = _check_device_spec(spec, flag)
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        if amp and not cpu_has_native_bf16():
            raise DeviceUnavailableError(f"--amp (bf16 autocast) on the CPU needs native bfloat16 units (Intel AMX or "
                                         f"AVX512-BF16), which this CPU ({torch.backends.cpu.get_cpu_capability()}) "
                                         f"lacks: it would be slower than float32. Drop --amp, or train with {flag} "
                                         "cuda on a machine with a GPU.")
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise DeviceUnavailableError(f"{flag} {spec}: torch sees no CUDA GPU on this machine "
                                     f"(torch {torch.__version__}, {build}). Use {flag} cpu (or auto), or install a "
                                     "CUDA build of torch on a GPU machine.")
    device = torch.device(spec)
    index = torch.cuda.current_device() if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise DeviceUnavailableError(f"{flag} {spec}: this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                                     f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}).")
    if amp and not torch.cuda.is_bf16_supported():
        raise DeviceUnavailableError(f"--amp needs bf16 support; {torch.cuda.get_device_name(index)} has none. "
                                     "Drop --amp.")
    return torch.device("cuda", index)


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN computes bfloat16 natively on this CPU (AMX or AVX512-BF16), so bf16 autocast is faster than
    float32 here rather than emulated."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without the query: assume not
        return False


def to_device(obj: Any, device: torch.device | str) -> Any:
    """``obj`` with every tensor in it moved to ``device``: tensors, and dicts, lists, tuples (named ones too) and
    dataclass instances holding them, nested; anything else (plans, strings, numbers) is returned as it is. A
    container whose tensors are already there is returned itself, not copied (``Tensor.to`` returns the same
    tensor), so the CPU path changes nothing."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        moved = {k: to_device(v, device) for k, v in obj.items()}
        return obj if all(moved[k] is obj[k] for k in obj) else type(obj)(moved)
    if isinstance(obj, (list, tuple)):
        items = [to_device(v, device) for v in obj]
        if all(a is b for a, b in zip(items, obj)):
            return obj
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)  # a namedtuple takes *items
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}
        moved = {k: to_device(v, device) for k, v in fields.items()}
        return obj if all(moved[k] is fields[k] for k in fields) else dataclasses.replace(obj, **moved)
    return obj


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's parameters (the CPU for a model without any): where its batches must go."""
    return next(model.parameters(), torch.empty(0)).device


def device_description(device: torch.device | str, amp: bool = False) -> str:
    """How a model card names the hardware of a run: the CPU with its torch threads, or the GPU by name."""
    device = torch.device(device)
    if device.type == "cpu":
        return f"with {torch.get_num_threads()} torch thread(s), CPU{', bf16 autocast' if amp else ''}"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return f"on {device} ({name}){', bf16 autocast' if amp else ''}"


# ------------------------------------------------------------------------------------------------ the loop
@dataclass(frozen=True)
class LoopSettings:
    """Optimisation and bookkeeping of `train_loop`.

    Attributes:
        steps: total optimiser steps (a resumed run continues up to this number).
        batch_size, lr, seed: as the CLI flags; ``weight_decay``: AdamW's; ``grad_clip``: max gradient norm.
        log_every, val_every, checkpoint_every: intervals in steps (the last step always validates and saves).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (`resolve_device`); ``amp``: bf16 autocast of the
            losses (CUDA only). Neither is part of `identity`: a run may resume on another device.
        lr_scales: ``((prefix, scale), ...)``: parameters whose name starts with ``prefix`` learn at ``lr * scale``
            (the first matching prefix wins), e.g. a freshly added part of a fine-tuned network.
    """

    steps: int
    batch_size: int
    lr: float
    seed: int = 0
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    log_every: int = 10
    val_every: int = 200
    checkpoint_every: int = 100
    device: str = "cpu"
    amp: bool = False
    lr_scales: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", _check_device_spec(self.device))
        object.__setattr__(self, "lr_scales", tuple((str(p), float(f)) for p, f in self.lr_scales))
        if any(not f > 0 for _, f in self.lr_scales):
            raise ConfigError(f"Learning-rate scales must be positive: got {dict(self.lr_scales)}.")
        bad = {k: getattr(self, k) for k in ("steps", "batch_size", "log_every", "val_every", "checkpoint_every")
               if int(getattr(self, k)) < 1}
        if bad or not self.lr > 0:
            raise ConfigError(f"Training settings must be positive: got {bad or {'lr': self.lr}}.")

    def identity(self) -> dict[str, Any]:
        """What a resumed run must share with the saved one (the intervals and ``steps`` may change)."""
        return {k: v for k, v in asdict(self).items()
                if k not in ("steps", "log_every", "val_every", "checkpoint_every", "device", "amp")
                and not (k == "lr_scales" and not v)}  # (absent when unused, so older runs stay resumable)

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The optimiser's parameter groups: one at ``lr``, then one per `lr_scales` prefix that matches."""
        groups: dict[float, list[nn.Parameter]] = {1.0: []}
        for name, param in model.named_parameters():
            scale = next((f for prefix, f in self.lr_scales if name.startswith(prefix)), 1.0)
            groups.setdefault(scale, []).append(param)
        return [{"params": params, "lr": self.lr * scale} for scale, params in groups.items() if params]


@dataclass
class TrainReport:
    """What a training run did. ``start_step`` > 0 when it resumed; losses are the last logged ones; ``seconds`` is
    the whole loop, ``seconds_per_step`` the optimiser steps alone (validation excluded)."""

    kind: str
    out: Path
    steps: int
    start_step: int
    final_train_loss: float
    final_val_loss: float
    seconds: float
    seconds_per_step: float
    n_train: int
    n_val: int
    model_config: dict[str, Any] = field(default_factory=dict)
    n_params: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    hardware: str = ""  # `device_description` of the run, for the model card

    def summary(self) -> str:
        resumed = f" (resumed at step {self.start_step})" if self.start_step else ""
        if self.device != "cpu":
            resumed += f" on {self.device}"
        return "\n".join([
            f"Trained {self.kind}: {self.steps} steps{resumed} on {self.n_train} cases, {self.n_val} held out",
            f"  final train loss {self.final_train_loss:.5f}, validation loss {self.final_val_loss:.5f}",
            f"  {self.seconds:.1f} s, {self.seconds_per_step:.3f} s/step",
            f"  checkpoint, MODEL_CARD.md and {LOG_FILE} in {self.out}",
        ])


def _save_state(path: Path, state: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(to_device(state, "cpu"), tmp)  # CPU tensors: the state resumes on any machine
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _append_log(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after ``step`` (by a run that stopped before its next saved state)."""
    if path.is_file():
        keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in keep))


def _load_state(path: Path, identity: dict[str, Any]) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"--resume: there is no {path.name} in {path.parent} to resume from. Drop --resume to "
                          "start training there.")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state["identity"] != identity:
        diff = sorted(k for k in set(identity) | set(state["identity"])
                      if identity.get(k) != state["identity"].get(k))
        raise ConfigError(f"--resume: the run in {path.parent} was made with other settings ({', '.join(diff)}: "
                          f"saved {[state['identity'].get(k) for k in diff]}, now {[identity.get(k) for k in diff]}). "
                          "Resume with the same settings, or train into a new --out.")
    return state


def train_loop(build_model: Callable[[], nn.Module],
               batch_loss: Callable[[nn.Module, torch.Generator], torch.Tensor],
               val_loss: Callable[[nn.Module], float], *, settings: LoopSettings, out: str | os.PathLike, kind: str,
               identity: dict[str, Any], n_train: int, n_val: int, resume: bool = False,
               progress: bool | ProgressFn | None = True,
               before_save: Callable[[nn.Module], dict[str, Any]] | None = None,
               extra: dict[str, Any] | None = None) -> TrainReport:
    """Build a model and train it for ``settings.steps`` steps (see the module docstring); save its checkpoint.

    Args:
        build_model: makes the network (called after ``torch.manual_seed(seed)``, so its initial weights are
            seeded); it must have a ``config`` dict (its constructor keywords).
        batch_loss: ``(model, generator)`` → the scalar loss of a training batch drawn with the generator.
        val_loss: ``model`` → the loss on the fixed held-out cases (called in eval mode under ``torch.no_grad``).
        kind: the checkpoint kind.
        identity: data and model settings a resumed run must share (merged with the optimiser settings).
        before_save: called once after the last step; returns items added to the checkpoint's ``extra``.

    Raises:
        ConfigError: ``out`` holds a training state and ``resume`` is false, or ``resume`` finds no matching state.
        DeviceUnavailableError: ``settings.device`` (or ``amp``) asks for a GPU that torch cannot use.
        ModelOutputError: the loss became NaN or infinite.
    """
    # 1. prepare: output folder, RNGs, optimiser, state
    device = resolve_device(settings.device, amp=settings.amp)  # an unusable GPU fails before anything is written
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    state_path, log_path = out / STATE_FILE, out / LOG_FILE
    torch.manual_seed(settings.seed)
    model = build_model().to(device)  # built on the CPU (same seed, same initial weights), then moved
    autocast = ((lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if settings.amp
                else contextlib.nullcontext)
    identity = {"kind": kind, "model": getattr(model, "config", None), **settings.identity(), **identity}
    identity = json.loads(json.dumps(identity))  # as it reads back (tuples → lists)
    optimiser = torch.optim.AdamW(settings.param_groups(model), lr=settings.lr, weight_decay=settings.weight_decay)
    generator = torch.Generator().manual_seed(settings.seed)
    if resume:
        state = _load_state(state_path, identity)
        model.load_state_dict(state["model"])  # copied into the parameters on their device
        optimiser.load_state_dict(state["optimiser"])  # torch moves the moments to each parameter's device
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        start, running, last = state["step"], state["running"], state["last"]
        _truncate_log(log_path, start)
    else:
        if state_path.exists():
            raise ConfigError(f"{out} already holds a training run ({STATE_FILE}); pass --resume to continue it, or "
                              "choose a new --out.")
        start, running, last = 0, [0.0, 0], {"loss": math.nan, "val_loss": math.nan}
        log_path.write_text("")
    if start > settings.steps:
        raise ConfigError(f"--resume: the run in {out} is already at step {start}, beyond --steps {settings.steps}.")

    val_seconds = [0.0]

    def validate(step: int) -> None:
        t = time.perf_counter()
        model.eval()
        with torch.random.fork_rng(devices=[]), torch.no_grad(), autocast():
            last["val_loss"] = float(val_loss(model))
        model.train()
        _append_log(log_path, {"step": step, "val_loss": last["val_loss"]})
        val_seconds[0] += time.perf_counter() - t

    def checkpoint(step: int) -> None:
        _save_state(state_path, {"step": step, "model": model.state_dict(), "optimiser": optimiser.state_dict(),
                                 "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                                 "running": list(running), "last": dict(last), "identity": identity,
                                 **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {})})

    # 2. the loop
    report = resolve_progress(progress, f"train {kind}", "step")
    t0 = time.perf_counter()
    model.train()
    for step in range(start + 1, settings.steps + 1):
        with autocast():
            loss = batch_loss(model, generator)
        if not torch.isfinite(loss):
            raise ModelOutputError(f"Training {kind} diverged at step {step}: the loss is {loss.item()}. Lower --lr "
                                   f"(now {settings.lr:g}) or resume from the last saved state.")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimiser.step()
        running[0] += float(loss.detach())
        running[1] += 1
        if step % settings.log_every == 0 or step == settings.steps:
            last["loss"] = running[0] / running[1]
            running[:] = [0.0, 0]
            _append_log(log_path, {"step": step, "loss": last["loss"], "seconds": round(time.perf_counter() - t0, 3)})
        if step % settings.val_every == 0 or step == settings.steps:
            validate(step)
        if step % settings.checkpoint_every == 0 or step == settings.steps:
            checkpoint(step)
        if report:  # the last logged mean; before the first log point, the mean so far (never "nan")
            shown = last["loss"] if math.isfinite(last["loss"]) else running[0] / max(running[1], 1)
            report(step, settings.steps, f"loss {shown:.4f}")
    seconds = time.perf_counter() - t0
    if math.isnan(last["val_loss"]):  # resumed at the final step of a run that never validated
        validate(settings.steps)

    # 3. the checkpoint
    extra = dict(extra or {})
    if before_save is not None:
        model.eval()
        with torch.no_grad():
            extra.update(before_save(model))
        model.train()
    save_checkpoint(out, model, kind=kind, config=model.config, extra=extra)
    done = settings.steps - start
    return TrainReport(kind=kind, out=out, steps=settings.steps, start_step=start, final_train_loss=last["loss"],
                       final_val_loss=last["val_loss"], seconds=seconds,
                       seconds_per_step=(seconds - val_seconds[0]) / done if done else math.nan, n_train=n_train,
                       n_val=n_val, model_config=model.config, n_params=sum(p.numel() for p in model.parameters()),
                       extra=extra, device=str(device), hardware=device_description(device, settings.amp))
