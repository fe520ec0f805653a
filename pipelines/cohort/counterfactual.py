"""Counterfactual truth: the post-TACE CT and labels a virtual patient WOULD have had under another plan.

For scoring the dynamics world model only (``mewm eval dynamics``): models never call the simulator. A cohort folder
records its seed and grid in ``manifest.json``; `regenerate_cohort` re-simulates its patients from them
(``simulate_case(case_seeds(seed, n)[i], i, plans)``, the same call `generate_cohort` makes), and
`render_counterfactual` re-renders one patient with the response of any plan (`plan_response`) through the same
`render_case`, so anatomy, lesions and the pre-treatment CT are the cohort's own. Under the administered plan (with
its doses, ``truth.plan``) the result equals the cohort's files up to their int16 HU storage.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import ConfigError, ManifestError
from pipelines.cohort.generate import GENERATOR_VERSION, render_case
from pipelines.cohort.plan_space import read_plan_space
from pipelines.cohort.response import Response, plan_response
from pipelines.cohort.simulate import CaseTruth, case_seeds, simulate_case
from pipelines.volume import Volume

__all__ = ["Counterfactual", "RegeneratedCohort", "choose_plans", "regenerate_cohort", "render_counterfactual"]


@dataclass(frozen=True, eq=False)
class Counterfactual:
    """One patient rendered under ``plan``: the cohort's pre-treatment pair and the post-TACE pair of that plan.

    Volumes are ``(X, Y, Z)`` on the cohort's grid (float32 HU without int16 rounding; uint8-range labels).
    """

    plan: Any  # models.plan.Plan
    response: Response
    ct: Volume
    labels: Volume
    post_ct: Volume
    post_labels: Volume


@dataclass(frozen=True)
class RegeneratedCohort:
    """The simulator's truth for every case of a cohort folder (``truths[i]`` is manifest row ``i``)."""

    root: Path
    seed: int
    size: tuple[int, int, int]
    plans: list[Any]
    truths: list[CaseTruth]


def regenerate_cohort(cohort_dir: str | os.PathLike) -> RegeneratedCohort:
    """Re-simulate the patients of the cohort written to ``cohort_dir`` from its ``manifest.json`` (seed, n, grid).

    Raises:
        ManifestError: no readable ``manifest.json``, a generator version other than this one, or regenerated
            case ids / administered plans that differ from ``manifest.csv`` (the folder was not made by this
            simulator with the recorded seed).
    """
    from pipelines.manifest import read_manifest

    root = Path(cohort_dir).expanduser().resolve()
    path = root / "manifest.json"
    try:
        meta = json.loads(path.read_text())
        seed, n, size = int(meta["seed"]), int(meta["n"]), tuple(int(s) for s in meta["grid"]["size"])
        version = meta.get("generator_version")
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ManifestError(f"Cannot read the cohort metadata {path} ({e}); counterfactual truth needs a cohort "
                            "written by `mewm cohort generate`.") from e
    if version != GENERATOR_VERSION:
        raise ManifestError(f"{path} was written by {version!r}, but this simulator is {GENERATOR_VERSION!r}: its "
                            "counterfactuals would not match the files. Regenerate the cohort with "
                            f"`mewm cohort generate --n {n} --seed {seed} --out DIR`.")
    plans = read_plan_space(root)
    records = read_manifest(root)
    if len(records) != n:
        raise ManifestError(f"{root / 'manifest.csv'} has {len(records)} rows but manifest.json says n={n}.")
    truths = [simulate_case(ss, i, plans) for i, ss in enumerate(case_seeds(seed, n))]
    for r, t in zip(records, truths):
        if r.case_id != t.case_id or r.plan != t.plan.canonical():
            raise ManifestError(f"Cohort {root}: row {r.case_id!r} with plan {r.plan!r} does not match the simulator's "
                                f"{t.case_id!r} with {t.plan.canonical()!r} for seed {seed}; the folder was edited or "
                                "made by another generator.")
    return RegeneratedCohort(root=root, seed=seed, size=size, plans=plans, truths=truths)


def render_counterfactual(truth: CaseTruth, plan: Any, size: tuple[int, int, int]) -> Counterfactual:
    """Render ``truth``'s patient on a grid of ``size`` voxels with the post-TACE response to ``plan``.

    Args:
        truth: a regenerated case (`regenerate_cohort`).
        plan: any valid `models.plan.Plan` the simulator has an effect model for; ``truth.plan`` (the administered
            plan, with its doses) reproduces the cohort's own post-TACE files.
        size: the cohort's grid (``RegeneratedCohort.size``).

    Raises:
        PlanValidationError: the simulator has no effect model for an agent of ``plan``.
    """
    response = plan_response(truth.patient, plan)
    ct, labels, post_ct, post_labels = render_case(truth, size, response=response)
    return Counterfactual(plan=plan, response=response, ct=ct, labels=labels, post_ct=post_ct,
                          post_labels=post_labels)


def choose_plans(administered: Any, plan_space: list[Any], k: int, seed: int, index: int) -> list[Any]:
    """The administered plan first, then ``k - 1`` plans of ``plan_space`` with other agents, drawn without
    replacement by a generator seeded by ``(seed, index)`` (so a patient's plans do not depend on the others)."""
    others = [p for p in plan_space if p.key() != administered.key()]
    if not 1 <= k <= len(others) + 1:
        raise ConfigError(f"plans_per_patient must be between 1 and {len(others) + 1} (the plan space), got {k}.")
    rng = np.random.default_rng([int(seed), int(index)])
    return [administered] + [others[j] for j in sorted(rng.choice(len(others), size=k - 1, replace=False))]
