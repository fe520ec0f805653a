"""Action-conditioned sampling of the world model: what might this tumour look like after each plan?

`simulate` (also `WorldModel.simulate`) is one recipe:

1. check the inputs (plans parsed and validated, a tumour mask, counts ≥ 1);
2. crop the case with `pipelines.preprocess.preprocess_case` at the spacing and size the dynamics model was trained
   on; a lesion larger than that crop gets the smallest larger crop that holds it (`fitting_crop`, flagged in the
   result), up to ``WorldModel.max_crop_voxels``;
   A dynamics model with a response token (`models.response`) gets each plan's expected response from the world
   model's response predictor, computed on this crop (`predicted_responses`; reported per plan);
3. encode the pre-treatment crop once; build the tumour / change-region masks at latent resolution
   (`pipelines.worldmodel.regions.latent_masks`, the trainer's own function);
4. ONE batched denoising loop over all P plans × T samples (``WorldModel.sampler``: diffusers' DPM-Solver++ of second
   order, the default, 15 steps; or MONAI's ``DDIMScheduler``, η = 0, 25 steps), with classifier-free guidance
   ``ε = ε_null + g (ε_plan − ε_null)`` (Ho & Salimans, https://arxiv.org/abs/2207.12598): the null-plan and plan
   rows run in the same denoiser call. For a model with a response token whose ``WorldModel.response_guidance``
   differs from g, a third branch scales the token on its own (`combine_guidance`). The initial noise of sample t
   comes from a `torch.Generator` seeded by ``(seed, t)`` and is shared by every plan, so for one seed plans differ
   only through the plan. Rows are split into calls of at most ``WorldModel.max_batch``; both samplers are
   deterministic ODE solvers, so the split changes nothing;
5. decode and segment the whole decoded crop (one contrast phase, as the segmenter was trained: see
   `decode_and_segment`); outside the change region the labels stay the pre-treatment labels;
6. keep the pre-treatment voxels outside the change region (a soft edge of ``EDGE_SIGMA_VOXELS`` inside it);
7. per plan and sample: viable tumour, necrosis and Lipiodol volumes (ml) and their change from the pre-treatment
   crop; per plan: mean ± sd over the samples.

Array convention: crops are ``(X, Y, Z)`` in the crop's RAS voxel order (`pipelines.preprocess`), stacked per plan
as ``(T, X, Y, Z)``. `SimulationResult.paste_back` puts a sample back into the case's full CT grid.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.networks.schedulers import DDIMScheduler
from scipy import ndimage

from models.clinical_encoder import clinical_values
from models.errors import CheckpointNotFoundError, EmptyMaskError, LesionTooLargeError, PlanValidationError
from models.plan import Plan
from models.response import RESPONSE_TARGETS
from pipelines.case import Case
from pipelines.config import DEFAULT_SAMPLER, DEFAULT_STEPS
from pipelines.preprocess import (CropSample, crop_size_ladder, lesion_components, lesion_fits, paste_back,
                                  preprocess_case, unwindow_hu, window_hu)
from pipelines.progress import ProgressFn
from pipelines.volume import LABELS, Volume
from pipelines.worldmodel.metrics import json_safe
from pipelines.worldmodel.regions import change_region, latent_masks
from pipelines.worldmodel.response import lesion_features
from pipelines.worldmodel.weights import WorldModel

__all__ = ["predicted_responses",
           "STRUCTURES", "EDGE_SIGMA_VOXELS", "DECODE_BATCH", "StructureSummary", "PlanSimulation", "PastedSample",
           "blend_weight", "guidance_branches", "combine_guidance",
           "SimulationResult", "simulate", "decode_and_segment", "segment_in_region", "parse_plans", "sample_noise",
           "crop_sizes", "fitting_crop"]

# Structures whose volumes are reported: name -> label (`pipelines.volume.LABELS`).
STRUCTURES: dict[str, int] = {"viable_tumour": LABELS["tumour"], "necrosis": LABELS["necrosis"],
                              "lipiodol": LABELS["lipiodol"]}
# Width (crop voxels) of the soft edge inside the change region where the decoded crop fades into the pre crop.
EDGE_SIGMA_VOXELS = 1.0
# Crops per decoder and segmenter call: on the 2-core CPU, 8 decode faster per crop than 1 or 40
# (`scripts/profile_sampler.py`); memory stays small whatever the number of plans × samples.
DECODE_BATCH = 8


# ------------------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class StructureSummary:
    """One structure under one plan, over T samples (ml). ``sd`` is the sample sd (``nan`` when T = 1)."""

    pre_ml: float
    mean_ml: float
    sd_ml: float
    mean_change_ml: float
    sd_change_ml: float


@dataclass(frozen=True, eq=False)
class PlanSimulation:
    """The T simulated outcomes of one plan.

    Attributes:
        plan: the validated `Plan`.
        crops_hu: ``(T, X, Y, Z)`` float32 simulated post-treatment crops in HU (window [-175, 600]).
        labels: ``(T, X, Y, Z)`` uint8 predicted labels (`pipelines.volume.LABELS`).
        volumes: structure name (`STRUCTURES`) → ``(T,)`` volumes in ml.
        changes: structure name → ``(T,)`` change from the pre-treatment crop in ml (negative = shrinkage).
        summary: structure name → `StructureSummary` (mean ± sd over the samples).
        response: with a response-token model, the response predictor's expected fractions of the pre-treatment
            lesion (`models.response.RESPONSE_TARGETS` → value) the samples were conditioned on; else ``None``.
    """

    plan: Plan
    crops_hu: np.ndarray
    labels: np.ndarray
    volumes: dict[str, np.ndarray]
    changes: dict[str, np.ndarray]
    summary: dict[str, StructureSummary]
    response: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan.canonical(), "definition": self.plan.to_dict(),
                "volumes_ml": {k: v.tolist() for k, v in self.volumes.items()},
                "change_ml": {k: v.tolist() for k, v in self.changes.items()},
                "summary": {k: vars(s) for k, s in self.summary.items()},
                "predicted_response": self.response}


@dataclass(frozen=True)
class PastedSample:
    """One simulated sample on the case's full CT grid: ``ct`` (HU) and ``labels``."""

    ct: Volume
    labels: Volume


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """What `simulate` returns.

    Attributes:
        case_id: the case simulated.
        plans: one `PlanSimulation` per plan, in the order given.
        pre_hu: ``(X, Y, Z)`` float32 pre-treatment crop in HU (windowed); ``pre_labels`` its uint8 labels.
        pre_volumes: structure name → pre-treatment volume in the crop (ml).
        region: ``(X, Y, Z)`` bool change region (outside it every sample equals the pre crop).
        crop: the `CropSample` (geometry for `paste_back`); ``case``: the case (its full grid).
        samples, seed, steps, guidance: the sampling settings; precision: the networks' compute dtype
            (`WorldModel.precision`); response_guidance: `WorldModel.response_guidance` for a response-token
            model (``None``: none, or a model without the token); sampler: `WorldModel.sampler`.
        timings: seconds per stage (``crop``, ``encode``, ``denoise``, ``decode``, ``segment``, ``total``).
        denoiser_passes: denoiser calls (steps × calls per step); ``denoiser_rows``: rows through the denoiser
            per step (P · T times the guidance branches, `guidance_branches`).
        clinical: the covariates a model with ``clinical_fields`` was given (name → value, ``None`` = unknown to
            it); empty for a model of the CT and the plan only.
    """

    case_id: str
    plans: list[PlanSimulation]
    pre_hu: np.ndarray
    pre_labels: np.ndarray
    pre_volumes: dict[str, float]
    region: np.ndarray
    crop: CropSample = field(repr=False)
    case: Case = field(repr=False)
    samples: int = 1
    seed: int = 0
    steps: int = DEFAULT_STEPS
    guidance: float = 2.0
    precision: str = "float32"
    timings: dict[str, float] = field(default_factory=dict)
    response_guidance: float | None = None
    denoiser_passes: int = 0
    denoiser_rows: int = 0
    training_crop_size: tuple[int, int, int] | None = None
    clinical: dict[str, Any] = field(default_factory=dict)
    sampler: str = DEFAULT_SAMPLER

    @property
    def clinical_note(self) -> str | None:
        """Which of the model's covariates the case lacks (simulated as unknown), or ``None``."""
        missing = [k for k, v in self.clinical.items() if v is None]
        if not missing:
            return None
        return (f"The dynamics model also reads {', '.join(self.clinical)}; this case has no {', '.join(missing)}, "
                "so it was simulated with them unknown (the model was trained with labs blanked at times): expect "
                "a wider spread between samples.")

    @property
    def enlarged_crop(self) -> bool:
        """The lesion did not fit the training crop, so a larger crop (same spacing) was simulated."""
        return self.training_crop_size is not None and tuple(self.crop.crop_size) != tuple(self.training_crop_size)

    @property
    def crop_note(self) -> str | None:
        """What a user must know about the crop, or ``None`` (shown by the CLI, the pages and the reports)."""
        if not self.enlarged_crop:
            return None
        field_mm = " × ".join(f"{s * v:.0f}" for s, v in zip(self.crop.crop_size, self.crop.spacing))
        train_mm = " × ".join(f"{s * v:.0f}" for s, v in zip(self.training_crop_size, self.crop.spacing))
        return (f"The lesion is larger than the model's {train_mm} mm training crop, so it was simulated in an "
                f"enlarged {field_mm} mm crop at the same voxel size: outside the training distribution; "
                "interpret with extra caution.")

    @property
    def seconds(self) -> float:
        return self.timings.get("total", float("nan"))

    def to_dict(self) -> dict[str, Any]:
        """Plain, strict-JSON data (non-finite numbers become ``null``): settings, plans, volumes, timings."""
        return json_safe({
            "case_id": self.case_id, "samples": self.samples, "seed": self.seed, "steps": self.steps,
            "guidance": self.guidance, "response_guidance": self.response_guidance, "precision": self.precision,
            "sampler": self.sampler,
            "crop": {"spacing_mm": list(self.crop.spacing),
                                                "crop_size": list(self.crop.crop_size),
                                                "centre_world_mm": list(self.crop.centre_world),
                                                "enlarged": self.enlarged_crop, "note": self.crop_note},
            "clinical": {"covariates": self.clinical, "note": self.clinical_note},
            "pre_volumes_ml": self.pre_volumes, "plans": [p.to_dict() for p in self.plans],
            "timings_s": self.timings, "denoiser_passes": self.denoiser_passes, "denoiser_rows": self.denoiser_rows,
        })

    def paste_back(self, plan_index: int, sample_index: int) -> PastedSample:
        """Sample ``sample_index`` of plan ``plan_index`` on the case's full CT grid.

        Inside the change region (resampled to the CT grid) the CT and labels come from the simulation; everywhere
        else they are the case's own, untouched (no HU clipping by the crop's window).
        """
        if not (0 <= plan_index < len(self.plans) and 0 <= sample_index < self.samples):
            raise IndexError(f"paste_back: plan {plan_index}, sample {sample_index} outside {len(self.plans)} "
                             f"plan(s) × {self.samples} sample(s).")
        sim = self.plans[plan_index]
        inside = paste_back(self.region.astype(np.uint8), self.crop, self.case, kind="label",
                            base=self.case.labels.with_array(np.zeros(self.case.ct.shape, np.uint8))).array > 0
        ct = paste_back(window_hu(sim.crops_hu[sample_index]), self.crop, self.case, kind="scalar")
        labels = paste_back(sim.labels[sample_index], self.crop, self.case, kind="label")
        ct_array = np.where(inside, ct.array, self.case.ct.array).astype(np.float32)
        label_array = np.where(inside, labels.array, self.case.labels.array).astype(self.case.labels.array.dtype)
        name = f"simulated after {sim.plan.canonical()} (sample {sample_index})"
        return PastedSample(ct=self.case.ct.with_array(ct_array, name=f"CT {name}"),
                            labels=self.case.labels.with_array(label_array, name=f"labels {name}"))


# ------------------------------------------------------------------------------------------------ inputs
def parse_plans(plans: Sequence[Plan | str] | Plan | str) -> list[Plan]:
    """Plans as validated `Plan`s: a `Plan` is re-validated, text is read with `Plan.parse`.

    Raises:
        PlanValidationError: no plans, or a plan breaks a rule (the message names it and the plan's position).
    """
    items = [plans] if isinstance(plans, (Plan, str)) else list(plans)
    if not items:
        raise PlanValidationError("No plan to simulate; give at least one, e.g. 'Epirubicin; Lipiodol'.",
                                  rule="format")
    out = []
    for i, item in enumerate(items, start=1):
        try:
            if isinstance(item, Plan):
                out.append(item.validate())
            elif isinstance(item, str):
                out.append(Plan.parse(item))
            else:
                raise PlanValidationError(f"a plan must be a Plan or its text, got {type(item).__name__}.",
                                          rule="format")
        except PlanValidationError as e:
            prefix = f"Plan {i} ({item!r}): " if len(items) > 1 else ""
            raise type(e)(f"{prefix}{e}", rule=e.rule) from e
    return out


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"simulate: {name} must be a whole number >= 1, got {value!r}.")
    return int(value)


def crop_sizes(world: WorldModel) -> list[tuple[int, int, int]]:
    """The crops `simulate` tries, smallest first: the training crop, then each side grown by `WorldModel.crop_step`
    voxels (same spacing) up to ``world.max_crop_voxels``."""
    return crop_size_ladder(world.crop.crop_size, world.crop_step, world.max_crop_voxels)


def fitting_crop(world: WorldModel, case: Case) -> CropSample:
    """The smallest crop of `crop_sizes` that holds the whole lesion (the training crop whenever it fits).

    A larger crop keeps the voxel size, so the tumour looks as in training; the networks are convolutional and see
    only more surrounding liver. Such simulations are flagged (`SimulationResult.enlarged_crop`) and evaluated
    separately (``mewm eval dynamics``).

    Raises:
        LesionTooLargeError: the lesion does not fit even the largest crop.
    """
    for size in crop_sizes(world):
        crop = preprocess_case(case, spacing=world.crop.spacing, crop_size=size)
        if lesion_fits(case, crop):
            return crop
    lesion = lesion_components(case.tumour_mask())[crop.lesion_index]
    world_ijk = np.argwhere(lesion).astype(np.float64) @ case.ct.affine[:3, :3].T
    extent = np.ptp(world_ijk, axis=0) + case.ct.spacing
    field_mm = np.asarray(crop.crop_size) * np.asarray(crop.spacing)
    raise LesionTooLargeError(
        f"Case {case.case_id!r}: the lesion (about {' × '.join(f'{e:.0f}' for e in extent)} mm) does not fit in "
        f"the largest crop the world model allows ({' × '.join(f'{f:.0f}' for f in field_mm)} mm, "
        f"[worldmodel] max_crop_voxels = {world.max_crop_voxels}), so the model cannot simulate all of it. Raise "
        f"max_crop_voxels (slower, further from the {' × '.join(map(str, world.crop.crop_size))}-voxel training "
        f"crop), use weights trained with a larger crop, or check the tumour mask.")


def sample_noise(seed: int, samples: int, shape: Sequence[int]) -> torch.Tensor:
    """Initial latent noise ``(samples, *shape)``: sample t from a `torch.Generator` seeded by ``(seed, t)``.

    The seed of sample t is a hash of the pair (NumPy ``SeedSequence``), so samples are independent streams and
    sample t's noise does not depend on how many samples are drawn.
    """
    out = []
    for t in range(samples):
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([int(seed), t]).generate_state(1)[0]))
        out.append(torch.randn(tuple(shape), generator=g))
    return torch.stack(out)


# ------------------------------------------------------------------------------------------------ the loop
class _DPMSolver:
    """diffusers' DPM-Solver++ (2nd-order multistep) behind MONAI's scheduler interface (``timesteps``, ``step``
    returning ``(previous sample, None)``), on the dynamics model's noise schedule."""

    _BETA_SCHEDULES = {"scaled_linear_beta": "scaled_linear", "linear_beta": "linear"}

    def __init__(self, schedule: dict[str, Any], steps: int):
        from diffusers import DPMSolverMultistepScheduler

        if schedule.get("schedule") not in self._BETA_SCHEDULES:
            raise ValueError(f"simulate: the DPM-Solver sampler has no equivalent of the {schedule.get('schedule')!r} "
                             f"noise schedule; use the DDIM sampler.")
        self._inner = DPMSolverMultistepScheduler(
            num_train_timesteps=int(schedule["num_train_timesteps"]), beta_start=float(schedule["beta_start"]),
            beta_end=float(schedule["beta_end"]), beta_schedule=self._BETA_SCHEDULES[schedule["schedule"]],
            prediction_type=schedule["prediction_type"], algorithm_type="dpmsolver++", solver_order=2)
        self._inner.set_timesteps(steps)
        self.timesteps = self._inner.timesteps

    def step(self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor):
        return self._inner.step(model_output, timestep, sample).prev_sample, None


def _scheduler(world: WorldModel, steps: int):
    """A fresh sampler with ``steps`` timesteps: MONAI's DDIM (η = 0, no clipping: latents are not bounded) or, for
    ``world.sampler == "dpm_solver"``, `_DPMSolver`."""
    n = int(world.scheduler["num_train_timesteps"])
    if steps > n:
        raise ValueError(f"simulate: steps={steps} exceeds the {n} training timesteps of the dynamics model.")
    if world.sampler == "dpm_solver":
        return _DPMSolver(world.scheduler, steps)
    kwargs = {k: v for k, v in world.scheduler.items() if k != "num_train_timesteps"}
    scheduler = DDIMScheduler(num_train_timesteps=n, clip_sample=False, **kwargs)
    scheduler.set_timesteps(steps)
    return scheduler


def guidance_branches(guidance: float, response_guidance: float | None) -> int:
    """Denoiser rows per simulated row: 1 (the plan branch alone: g = 1 and no separate response scale), 2 (classifier-
    free guidance, null and plan) or 3 (null, plan without its response token, plan with it: `combine_guidance`)."""
    if response_guidance is not None and response_guidance != guidance:
        return 3
    return 1 if guidance == 1.0 else 2


def combine_guidance(eps: Sequence[torch.Tensor], guidance: float, response_guidance: float | None) -> torch.Tensor:
    """The guided noise estimate from the branches of `guidance_branches` (in that order).

    Two branches: ``ε = ε_null + g (ε_plan − ε_null)``. Three: ``ε = ε_null + g (ε_plan − ε_null) + g_r (ε_full −
    ε_plan)``, where ε_plan is the plan with its response token left blank (the trainer's dropped token) and ε_full
    the plan with it, so ``g_r`` scales what the expected response adds to the plan and ``g`` what the plan adds to
    nothing (compositional guidance, Liu et al. 2022, https://arxiv.org/abs/2206.01714; with ``g_r = g`` it is the
    two-branch estimate).
    """
    if len(eps) == 1:
        return eps[0]
    if len(eps) == 2:
        return eps[0] + guidance * (eps[1] - eps[0])
    return eps[0] + guidance * (eps[1] - eps[0]) + float(response_guidance) * (eps[2] - eps[1])


def _denoise(world: WorldModel, pre_latent: torch.Tensor, masks: torch.Tensor, contexts: Sequence[torch.Tensor],
             noise: torch.Tensor, steps: int, guidance: float, response_guidance: float | None,
             report) -> tuple[torch.Tensor, int]:
    """The sampler over all P × T rows (row ``p · T + t`` = plan p, sample t), in calls of at most
    ``world.max_batch``.

    Args:
        pre_latent: ``(1, C, *L)``; masks: ``(2, *L)``; noise: ``(T, C, *L)``.
        contexts: the branches of `guidance_branches`, each ``(P, N, D)`` or ``(1, N, D)`` (the null plan).

    Returns:
        final latents ``(P · T, C, *L)`` and the number of denoiser calls.
    """
    p, t, branches = max(c.shape[0] for c in contexts), noise.shape[0], len(contexts)
    per_call = max(1, world.max_batch // branches)
    plan_of = torch.arange(p).repeat_interleave(t)
    sample_of = torch.arange(t).repeat(p)
    chunks = [range(s, min(s + per_call, p * t)) for s in range(0, p * t, per_call)]
    out, calls = [], 0
    for chunk in chunks:
        idx = torch.tensor(list(chunk))
        x = noise[sample_of[idx]].clone()
        context = torch.cat([c.expand(p, -1, -1)[plan_of[idx]] for c in contexts])
        rows = context.shape[0]
        pre = pre_latent.expand(rows, *pre_latent.shape[1:])
        mask = masks[None].expand(rows, *masks.shape)
        scheduler = _scheduler(world, steps)
        for timestep in scheduler.timesteps:
            x_in = torch.cat([x] * branches) if branches > 1 else x
            with world.autocast():
                eps = world.dynamics(x_in, torch.full((rows,), int(timestep), dtype=torch.long), pre, mask,
                                     context).float()
            eps = combine_guidance(eps.chunk(branches), guidance, response_guidance)
            x, _ = scheduler.step(eps, int(timestep), x)
            calls += 1
            report(f"denoising {calls}/{len(chunks) * steps}")
        out.append(x)
    return torch.cat(out), calls


def segment_in_region(world: WorldModel, x: torch.Tensor, pre_labels: np.ndarray, region: np.ndarray) -> torch.Tensor:
    """uint8 labels ``(B, X, Y, Z)`` of windowed crops ``x`` ``(B, 1, X, Y, Z)``: the segmenter's inside the change
    ``region``, the ``pre_labels`` outside it (how every simulated crop is labelled)."""
    with world.autocast():
        predicted = world.segmenter.predict(x)
    return torch.where(torch.from_numpy(region), predicted,
                       torch.from_numpy(pre_labels.astype(np.int64))).to(torch.uint8)


def blend_weight(region: np.ndarray) -> torch.Tensor:
    """Weight ``(X, Y, Z)`` of the decoded crop in the crop shown: 0 outside the change ``region``, rising to 1 over a
    soft edge of ``EDGE_SIGMA_VOXELS`` inside it (shown = pre + weight · (decoded − pre))."""
    return torch.from_numpy((ndimage.gaussian_filter(region.astype(np.float32), EDGE_SIGMA_VOXELS) * region)
                            .astype(np.float32))


def decode_and_segment(world: WorldModel, latents: torch.Tensor, pre: torch.Tensor, pre_labels: np.ndarray,
                       region: np.ndarray, timings: dict[str, float] | None = None,
                       report=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 5 and 6 of `simulate`: decode latents into crops the way every simulated crop is made.

    The segmenter labels the whole decoded crop, and outside the change region the labels stay the pre-treatment
    labels. Then the decoded crop fades into the pre-treatment crop at the edge of the change region (a soft edge of
    ``EDGE_SIGMA_VOXELS`` inside it) and equals it outside: that is the crop shown and pasted back. Segmenting before
    blending matters: the dynamics model predicts the whole post-treatment crop, in the follow-up's contrast phase,
    and the segmenter learnt crops of one phase (sharp or reconstructed); the blended crop joins the pre-treatment
    phase outside the region to the follow-up's inside it (on the virtual cohort arterial liver ~72 HU around
    portal-venous liver ~108 HU), which the segmenter misread as enhancing tumour, above all under plans without
    Lipiodol (figures: docs/worldmodel_design.md "Segment, then blend"). `pipelines.worldmodel.evaluate` passes the
    autoencoder's own encoding of the true post-treatment crop through the same function (the "autoencoder ceiling").

    Args:
        latents: ``(B, C, *L)``; pre: ``(1, 1, X, Y, Z)`` windowed pre crop; pre_labels, region: ``(X, Y, Z)``.
        timings: ``decode`` and ``segment`` seconds are added to it. report: ``report(message)`` per batch.

    Returns:
        windowed crops ``(B, X, Y, Z)`` in [-1, 1] and uint8 labels ``(B, X, Y, Z)``.
    """
    weight = blend_weight(region)
    timings = {} if timings is None else timings
    timings.setdefault("decode", 0.0)
    timings.setdefault("segment", 0.0)
    decoded, labels = [], []
    for s in range(0, latents.shape[0], DECODE_BATCH):
        t0 = time.perf_counter()
        with world.autocast():
            x = world.autoencoder.decode(latents[s:s + DECODE_BATCH]).float().clamp(-1.0, 1.0)
        decoded.append((pre + weight * (x - pre))[:, 0])  # the crop shown; the segmenter reads the whole decoded x
        t1 = time.perf_counter()
        labels.append(segment_in_region(world, x, pre_labels, region))
        timings["decode"] += t1 - t0
        timings["segment"] += time.perf_counter() - t1
        if report is not None:
            report("decoding and segmenting")
    return torch.cat(decoded), torch.cat(labels)


def _volumes(labels: np.ndarray, voxel_ml: float) -> dict[str, np.ndarray]:
    """Structure volumes (ml) of ``(..., X, Y, Z)`` labels: name → array of the leading shape."""
    return {name: (labels == value).sum(axis=(-3, -2, -1)).astype(np.float64) * voxel_ml
            for name, value in STRUCTURES.items()}


def _summary(pre: float, volumes: np.ndarray) -> StructureSummary:
    sd = float(np.std(volumes, ddof=1)) if volumes.size > 1 else float("nan")
    return StructureSummary(pre_ml=pre, mean_ml=float(volumes.mean()), sd_ml=sd,
                            mean_change_ml=float(volumes.mean()) - pre, sd_change_ml=sd)


def _clinical_inputs(world: WorldModel, case: Case) -> dict[str, Any]:
    """The case's values of the dynamics model's ``clinical_fields`` (``None`` where unknown or not finite)."""
    fields = world.dynamics.config.get("clinical_fields") or []
    _, present = clinical_values(case.covariates, fields)
    return {name: getattr(case.covariates, name, None) if known else None for name, known in zip(fields, present)}


def predicted_responses(world: WorldModel, case: Case, pre: torch.Tensor, pre_labels: np.ndarray,
                        plans: Sequence[Plan], voxel_ml: float) -> torch.Tensor:
    """The response predictor's expected responses ``(P, 3)`` for ``plans`` from the windowed pre crop ``pre``
    ``(1, 1, X, Y, Z)``, its labels and the case's covariates."""
    if world.response is None:
        raise CheckpointNotFoundError(f"The dynamics model in {world.weights_dir / 'dynamics'} reads a response token "
                                      "but no response predictor is loaded; make one with `mewm train response`.")
    features = lesion_features(unwindow_hu(pre[0, 0]).numpy(), pre_labels, voxel_ml)
    return world.response.predict([features] * len(plans), [case.covariates] * len(plans), plans)


@torch.no_grad()
def simulate(world: WorldModel, case: Case, plans: Sequence[Plan | str] | Plan | str, samples: int = 5,
             seed: int = 0, steps: int = DEFAULT_STEPS, guidance: float = 2.0,
             progress: ProgressFn | None = None) -> SimulationResult:
    """Simulate the post-treatment tumour crop of ``case`` under each plan, ``samples`` times (see module doc).

    Args:
        world: the loaded `WorldModel`.
        case: a `Case` with a tumour mask (labels 2–4).
        plans: `Plan`s or plan texts (``"Lobaplatin; Epirubicin; Lipiodol"``), or one of them.
        samples: T ≥ 1 samples per plan. seed: the noise seed (same seed, same result).
        steps: steps of ``world.sampler`` (≥ 1, at most the training timesteps). guidance: classifier-free
            guidance scale g (1 = the plan branch alone, 0 = ignore the plan).
        progress: ``progress(done, total, message)`` callback.

    Raises:
        PlanValidationError: an invalid plan, or an agent the dynamics model was not trained on.
        EmptyMaskError: the case has no tumour mask. LesionTooLargeError: the lesion does not fit even the largest allowed crop.
        ValueError: samples or steps < 1, a non-finite guidance, a non-integer seed.
    """
    start = time.perf_counter()
    timings: dict[str, float] = {}

    # 1. check inputs (before any heavy work)
    plan_list = parse_plans(plans)
    samples, steps = _count("samples", samples), _count("steps", steps)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"simulate: seed must be an integer, got {seed!r}.")
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance):
        raise ValueError(f"simulate: guidance must be a finite number, got {guidance!r}.")
    guidance = float(guidance)
    if not case.has_tumour_mask:
        raise EmptyMaskError(f"Case {case.case_id!r} has no tumour mask (labels 2, 3 or 4), so there is nothing to "
                             "simulate. Load or draw a tumour mask with the CT first.")
    clinical = _clinical_inputs(world, case)
    # raises for agents outside the model's vocabulary; the covariates (if the model reads any) go to both branches
    plan_context = world.dynamics.encode_plans(plan_list, [clinical] * len(plan_list))
    null_context = world.dynamics.encode_plans([None], [clinical])
    _scheduler(world, steps)  # steps within the schedule

    # 2. crop as in training
    crop = fitting_crop(world, case)
    pre = crop.image.as_tensor()[None].float()  # (1, 1, X, Y, Z) in [-1, 1]
    pre_labels = crop.labels[0].cpu().numpy().astype(np.uint8)
    region = change_region(pre_labels, world.change_margin_mm, crop.spacing)
    masks = latent_masks(pre_labels, world.autoencoder.downsampling, crop.spacing, world.change_margin_mm)
    voxel_ml = float(np.prod(crop.spacing)) / 1000.0
    responses, full_context = None, plan_context  # the plan rows get the predicted response, the null row none
    if world.dynamics.response_encoder is not None:
        responses = predicted_responses(world, case, pre, pre_labels, plan_list, voxel_ml)
        full_context = world.dynamics.encode_plans(plan_list, [clinical] * len(plan_list), responses)
    response_guidance = world.token_guidance
    branches = guidance_branches(guidance, response_guidance)
    contexts = {1: [full_context], 2: [null_context, full_context],
                3: [null_context, plan_context, full_context]}[branches]
    timings["crop"] = time.perf_counter() - start

    # 3. encode the pre crop once
    t0 = time.perf_counter()
    with world.autocast():
        pre_latent = world.autoencoder.encode(pre).float()  # (1, C, *L)
    timings["encode"] = time.perf_counter() - t0

    # 4. one batched, guided sampling loop over plans × samples
    per_call = max(1, world.max_batch // branches)
    n_calls = math.ceil(len(plan_list) * samples / per_call)
    total, done = n_calls * (steps + 1), [0]

    def report(message: str) -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total, message)

    t0 = time.perf_counter()
    noise = sample_noise(int(seed), samples, pre_latent.shape[1:])
    latents, passes = _denoise(world, pre_latent, masks, contexts, noise, steps, guidance, response_guidance, report)
    timings["denoise"] = time.perf_counter() - t0

    # 5.-6. decode, keep the pre crop outside the change region, segment
    decoded, crop_labels_t = decode_and_segment(world, latents, pre, pre_labels, region, timings, report)
    crops_hu = unwindow_hu(decoded).numpy().astype(np.float32)
    crop_labels = crop_labels_t.numpy()

    # 7. volumes per plan and sample, mean ± sd per plan
    pre_volumes = {k: float(v) for k, v in _volumes(pre_labels, voxel_ml).items()}
    results = []
    for i, plan in enumerate(plan_list):
        rows = slice(i * samples, (i + 1) * samples)
        volumes = _volumes(crop_labels[rows], voxel_ml)
        results.append(PlanSimulation(
            plan=plan, crops_hu=crops_hu[rows], labels=crop_labels[rows], volumes=volumes,
            changes={k: v - pre_volumes[k] for k, v in volumes.items()},
            summary={k: _summary(pre_volumes[k], v) for k, v in volumes.items()},
            response=None if responses is None else dict(zip(RESPONSE_TARGETS, map(float, responses[i])))))
    timings["total"] = time.perf_counter() - start
    rows_per_step = len(plan_list) * samples * branches
    return SimulationResult(
        case_id=case.case_id, plans=results, pre_hu=unwindow_hu(pre[0, 0]).numpy().astype(np.float32),
        pre_labels=pre_labels, pre_volumes=pre_volumes, region=region, crop=crop, case=case, samples=samples,
        seed=int(seed), steps=steps, guidance=guidance, precision=world.precision, timings=timings,
        response_guidance=response_guidance, sampler=world.sampler,
        denoiser_passes=passes, denoiser_rows=rows_per_step, training_crop_size=tuple(world.crop.crop_size),
        clinical=clinical)
