"""Follow-up → baseline CT registration with SimpleITK: rigid, then affine, optionally B-spline deformable.

`register_ct(fixed, moving)` returns a `Registration` whose transform maps *fixed* (baseline) world points to
*moving* (follow-up) world points, as SimpleITK's resampler wants; `Registration.resample(moving_volume, fixed)`
brings any follow-up volume onto the baseline grid (linear for CT, nearest for labels). One implementation, used by
the importer (to tell the follow-up's phase with the baseline's aorta/portal-vein masks, rigid only) and by
`mewm register`.

Metric: Mattes mutual information (robust to the contrast and Lipiodol differences between the scans) on
intensities clipped to [-200, 400] HU on a grid no finer than 2 mm, a fixed random sample (seeded: same inputs, same
transform), one thread, a coarse-to-fine pyramid sized to the image (never shrinking an axis below 8 voxels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.errors import RegistrationError
from pipelines.volume import Volume

__all__ = ["STAGES", "Registration", "register_ct"]

STAGES = ("rigid", "affine", "deformable")
HU_CLIP = (-200.0, 400.0)
MIN_PYRAMID_VOXELS = 8
REGISTRATION_SPACING_MM = 2.0  # the optimiser's finest grid (a CT's 0.7 mm in-plane voxels are resampled to this)


@dataclass
class Registration:
    """The result: the transform (fixed → moving world points), the metric per stage, and settings."""

    transform: Any  # SimpleITK.Transform
    stages: list[str]
    metric_before: float
    metric_final: float | None = None  # the same full-image metric as metric_before, after all stages
    metric_after: dict[str, float] = field(default_factory=dict)  # each stage's optimiser value (on its mask)
    iterations: dict[str, int] = field(default_factory=dict)
    translation_mm: list[float] = field(default_factory=list)

    def resample(self, moving: Volume, fixed: Volume) -> Volume:
        """``moving`` (a follow-up CT or label volume) on ``fixed``'s grid through the transform."""
        import SimpleITK as sitk

        from pipelines.caseio.geometry import sitk_to_volume, volume_to_sitk

        label = moving.kind == "label"
        src = volume_to_sitk(moving, None if label else np.float32)
        ref = volume_to_sitk(fixed.with_array(np.zeros(fixed.shape, dtype=np.uint8)))
        out = sitk.Resample(src, ref, self.transform, sitk.sitkNearestNeighbor if label else sitk.sitkLinear,
                            0.0 if label else -1024.0, src.GetPixelID())
        v = sitk_to_volume(out, moving.kind, moving.name)
        return Volume(v.array, fixed.affine, moving.kind, moving.name, dict(moving.meta))

    def to_dict(self) -> dict[str, Any]:
        return {"stages": self.stages, "metric": "Mattes mutual information (lower is better)",
                "metric_before": round(self.metric_before, 5),
                "metric_final": None if self.metric_final is None else round(self.metric_final, 5),
                "metric_after": {k: round(v, 5) for k, v in self.metric_after.items()},
                "iterations": self.iterations, "translation_mm": [round(t, 2) for t in self.translation_mm]}


def _coarse(image, label: bool = False):
    """``image`` on a grid no finer than `REGISTRATION_SPACING_MM` (same origin and direction; smoothed first when
    it is coarsened). The transform found lives in world coordinates, so it applies to the full-resolution images;
    the optimiser's cost no longer grows with a sub-millimetre in-plane resolution."""
    import SimpleITK as sitk

    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    target = np.maximum(spacing, REGISTRATION_SPACING_MM)
    if np.allclose(target, spacing):
        return image
    size = [max(1, int(np.ceil(n * s / t))) for n, s, t in zip(image.GetSize(), spacing, target)]
    if not label:
        image = sitk.SmoothingRecursiveGaussian(image, [float(t / 2) for t in target])
    return sitk.Resample(image, size, sitk.Transform(), sitk.sitkNearestNeighbor if label else sitk.sitkLinear,
                         image.GetOrigin(), [float(t) for t in target], image.GetDirection(), 0.0, image.GetPixelID())


def _image(volume: Volume):
    import SimpleITK as sitk

    from pipelines.caseio.geometry import volume_to_sitk

    return _coarse(sitk.Clamp(volume_to_sitk(volume, np.float32), sitk.sitkFloat32, *HU_CLIP))


def _pyramid(image) -> tuple[list[int], list[float]]:
    size = min(image.GetSize())
    shrinks = [f for f in (4, 2) if size // f >= MIN_PYRAMID_VOXELS] + [1]
    return shrinks, [float(f) / 2 if f > 1 else 0.0 for f in shrinks]


def _method(fixed_image, seed: int, iterations: int, mask=None, deformable: bool = False):
    import SimpleITK as sitk

    r = sitk.ImageRegistrationMethod()
    r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    r.SetMetricSamplingStrategy(r.RANDOM)
    r.SetMetricSamplingPercentage(0.3, seed + 1)  # SimpleITK reads seed 0 as "seed from the wall clock"
    r.SetInterpolator(sitk.sitkLinear)
    r.SetNumberOfThreads(1)
    if mask is not None:
        r.SetMetricFixedMask(mask)
    shrinks, sigmas = _pyramid(fixed_image)
    r.SetShrinkFactorsPerLevel(shrinks)
    r.SetSmoothingSigmasPerLevel(sigmas)
    r.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    if deformable:  # L-BFGS-B takes no parameter scales
        r.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=iterations)
        return r
    r.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4, numberOfIterations=iterations,
                                               relaxationFactor=0.6, gradientMagnitudeTolerance=1e-8)
    r.SetOptimizerScalesFromPhysicalShift()
    return r


def _metric(fixed_image, moving_image, transform, seed: int) -> float:
    import SimpleITK as sitk

    r = sitk.ImageRegistrationMethod()
    r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    r.SetMetricSamplingStrategy(r.NONE)
    r.SetInterpolator(sitk.sitkLinear)
    r.SetNumberOfThreads(1)
    r.SetInitialTransform(transform)
    return float(r.MetricEvaluate(fixed_image, moving_image))


def register_ct(fixed: Volume, moving: Volume, *, stages: tuple[str, ...] = ("rigid", "affine"), seed: int = 0,
                iterations: int = 200, fixed_mask: np.ndarray | None = None) -> Registration:
    """Register ``moving`` (follow-up CT) to ``fixed`` (baseline CT).

    Args:
        stages: an ordered subset of `STAGES` starting with ``"rigid"``.
        fixed_mask: optional boolean mask on ``fixed``'s grid (e.g. the dilated liver) for the affine and
            deformable stages, so the liver, not the whole body, drives them.

    Raises:
        RegistrationError: unknown stages, the optimiser fails, or the volumes do not overlap.
    """
    import SimpleITK as sitk

    # 1. check inputs
    if not stages or stages[0] != "rigid" or any(s not in STAGES for s in stages) or len(set(stages)) != len(stages):
        raise RegistrationError(f"Registration stages must start with 'rigid' and be taken from {STAGES} in order, "
                                f"got {list(stages)}.")
    f_img, m_img = _image(fixed), _image(moving)
    mask_img = None
    if fixed_mask is not None and fixed_mask.any():
        from pipelines.caseio.geometry import volume_to_sitk

        mask = volume_to_sitk(fixed.with_array(fixed_mask.astype(np.uint8), kind="label"))
        mask_img = sitk.Resample(mask, f_img, sitk.Transform(), sitk.sitkNearestNeighbor, 0, mask.GetPixelID())
    # 2. rigid, initialised by the centres of intensity mass
    try:
        initial = sitk.CenteredTransformInitializer(f_img, m_img, sitk.Euler3DTransform(),
                                                    sitk.CenteredTransformInitializerFilter.MOMENTS)
        before = _metric(f_img, m_img, sitk.TranslationTransform(3), seed)
        result = Registration(transform=initial, stages=[], metric_before=before)
        transform = initial
        for stage in stages:
            if stage == "rigid":
                r = _method(f_img, seed, iterations)
                r.SetInitialTransform(transform, inPlace=False)
            elif stage == "affine":
                affine = sitk.AffineTransform(3)
                affine.SetMatrix(transform.GetMatrix())
                affine.SetTranslation(transform.GetTranslation())
                affine.SetCenter(transform.GetCenter())
                r = _method(f_img, seed, iterations, mask_img)
                r.SetInitialTransform(affine, inPlace=False)
            else:
                mesh = [max(1, s // 8) for s in f_img.GetSize()]
                bspline = sitk.BSplineTransformInitializer(f_img, mesh)
                r = _method(f_img, seed, max(1, iterations // 2), mask_img, deformable=True)
                r.SetMovingInitialTransform(transform)
                r.SetInitialTransform(bspline, inPlace=False)
            out = r.Execute(f_img, m_img)
            if isinstance(out, sitk.CompositeTransform) and out.GetNumberOfTransforms() == 1:
                out = out.GetNthTransform(0).Downcast()
            if stage == "deformable":
                transform = sitk.CompositeTransform([transform, out])
            else:
                transform = out
            result.stages.append(stage)
            result.metric_after[stage] = float(r.GetMetricValue())
            result.iterations[stage] = int(r.GetOptimizerIteration())
    except RuntimeError as e:
        raise RegistrationError(f"SimpleITK registration failed ({str(e).splitlines()[-1][:200]}); check that the "
                                f"follow-up CT covers the liver of the baseline CT.") from e
    result.transform = transform
    result.metric_final = _metric(f_img, m_img, transform, seed)
    centre = np.asarray(f_img.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in f_img.GetSize()]))
    result.translation_mm = [float(t) for t in np.asarray(transform.TransformPoint(tuple(centre))) - centre]
    return result
