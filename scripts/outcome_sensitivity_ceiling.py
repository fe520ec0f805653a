"""How large can the dynamics evaluation's outcome action-sensitivity ratio be for a model that sees only the CT?

The virtual cohort's response to a plan is deterministic given the patient (`pipelines.cohort.response`), but part
of the patient is hidden biology that the pre-treatment CT shows only with noise (vascularity through enhancement,
heterogeneity through texture) or not at all (proliferation shows in the AFP, a lab the dynamics model does not
see; the per-class drug sensitivities carry their own hidden noise). A faithful generative model given the CT and
the plan must therefore spread its samples over the outcomes that patients who look the same would have: that
spread is the denominator of the ratio (`metrics.action_sensitivity`), and it is not zero even for a perfect model.

This script estimates that "ideal sampler" ratio with the simulator's own numbers, no networks involved:

1. the outcome of a plan is the vector the evaluation compares, (viable tumour, necrosis, Lipiodol) in ml, here
   ``V0 · (r, N, L)`` of `plan_response` with ``V0`` the pre-treatment tumour volume;
2. for each plan of the cohort's plan space, a regressor (quadratic-feature ridge per plan, and one MLP over all
   plans; both are reported) predicts ``(r, N, L)`` from what a model can see (feature set ``ct``: the CT-visible
   fields of `Patient.visible_features`; ``ct+labs``: all of them; ``ct+labs+latent`` adds the hidden v, p, h and
   cirrhosis themselves, a bound that no model can reach) on the training patients; its residuals there are the spread of outcomes among look-alike patients;
3. on the held-out patients, the ideal sampler draws T samples per plan as prediction + a residual of that plan
   drawn at random, for the evaluation's P plans per patient (`choose_plans`, same seed), and the pooled ratio is
   computed exactly as `mewm eval dynamics` does (mean between-plan distance / mean within-plan distance).

A better regressor would leave smaller residuals, so the figures are estimates, not bounds.

Usage: .venv/bin/python scripts/outcome_sensitivity_ceiling.py [--train-seed 1 --train-n 1200 --heldout-seed 2
       --heldout-n 75 --plans 4 --samples 3 --seed 0]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from pipelines.cohort.counterfactual import choose_plans
from pipelines.cohort.plan_space import cohort_plan_space
from pipelines.cohort.response import plan_response
from pipelines.cohort.simulate import case_seeds, simulate_case, simulate_patients
from pipelines.worldmodel import metrics

LAB_FEATURES = ("age", "male", "hbv", "log10_afp", "albumin", "bilirubin", "child_pugh_score", "ecog")


FEATURE_SETS = ("ct", "ct+labs", "ct+labs+latent")


def _features(patients, features: str) -> np.ndarray:
    """Per patient: the CT-visible fields, plus the labs, plus (a bound, not a model) the latent v, p, h."""
    rows = []
    for p in patients:
        f = p.visible_features()
        row = [f[k] for k in f if features != "ct" or k not in LAB_FEATURES] + [np.log(p.tumour_volume_ml)]
        if features == "ct+labs+latent":
            bio = p.biology
            row += [bio.vascularity, bio.proliferation, bio.heterogeneity, bio.cirrhosis]
        rows.append(row)
    return np.asarray(rows, dtype=np.float64)


def _quadratic(x: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    z = (x - mean) / sd
    i, j = np.triu_indices(z.shape[1])
    return np.concatenate([np.ones((len(z), 1)), z, z[:, i] * z[:, j]], axis=1)


def _outcomes(patients, plan) -> np.ndarray:
    """``(N, 3)`` fractions (r, N, L) of the pre-treatment tumour volume."""
    out = []
    for p in patients:
        r = plan_response(p, plan)
        out.append([r.viable_ratio, r.necrosis_fraction, r.lipiodol_fraction])
    return np.asarray(out)


def _fit_ridge(x_tr, x_te, y_tr, ridge: float = 1.0):
    """Per plan: quadratic-feature ridge. Returns ``(P, N_tr, 3)`` and ``(P, N_te, 3)`` predictions."""
    mean, sd = x_tr.mean(0), x_tr.std(0) + 1e-9
    q_tr, q_te = _quadratic(x_tr, mean, sd), _quadratic(x_te, mean, sd)
    gram = q_tr.T @ q_tr + ridge * np.eye(q_tr.shape[1])
    w = [np.linalg.solve(gram, q_tr.T @ y) for y in y_tr]
    return np.stack([q_tr @ wj for wj in w]), np.stack([q_te @ wj for wj in w])


def _fit_mlp(x_tr, x_te, y_tr, steps: int = 3000, seed: int = 0):
    """One MLP (features + plan one-hot -> 3 outcomes) over all plans; same return as `_fit_ridge`."""
    import torch

    n_plans = len(y_tr)
    mean, sd = x_tr.mean(0), x_tr.std(0) + 1e-9

    def design(x):
        z = (x - mean) / sd
        return torch.tensor(np.concatenate([np.concatenate([z, np.tile(np.eye(n_plans)[j], (len(z), 1))], 1)
                                            for j in range(n_plans)]), dtype=torch.float32)

    x, y = design(x_tr), torch.tensor(np.concatenate(y_tr), dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 128), torch.nn.SiLU(), torch.nn.Linear(128, 128),
                                  torch.nn.SiLU(), torch.nn.Linear(128, 3))
        opt = torch.optim.Adam(net.parameters(), 2e-3)
        for _ in range(steps):
            idx = torch.randint(0, len(x), (512,))
            loss = ((net(x[idx]) - y[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        p_tr, p_te = net(x).numpy(), net(design(x_te)).numpy()
    return p_tr.reshape(n_plans, len(x_tr), 3), p_te.reshape(n_plans, len(x_te), 3)


REGRESSORS = {"ridge": _fit_ridge, "mlp": _fit_mlp}


def ideal_ratio(train, heldout_truths, plans, features: str, regressor: str, n_plans: int, samples: int,
                seed: int) -> dict:
    """The pooled outcome ratio of the ideal sampler on the held-out patients (see the module docstring)."""
    heldout = [t.patient for t in heldout_truths]
    y_tr = [_outcomes(train, plan) for plan in plans]
    y_te = np.stack([_outcomes(heldout, plan) for plan in plans])
    p_tr, p_te = REGRESSORS[regressor](_features(train, features), _features(heldout, features), y_tr)
    resid = np.stack(y_tr) - p_tr  # (P, N_tr, 3): spread of outcomes among look-alike patients, per plan
    index = {plan.key(): j for j, plan in enumerate(plans)}
    rng = np.random.default_rng(seed)
    results = []
    for i, (p, truth) in enumerate(zip(heldout, heldout_truths)):
        # the evaluation's plans, as catalogue plans (the administered plan without its sampled doses)
        chosen = choose_plans(plans[truth.plan_index], plans, n_plans, seed, i)
        outs = [(p_te[index[c.key()], i] + resid[index[c.key()], rng.integers(0, resid.shape[1], size=samples)])
                * p.tumour_volume_ml for c in chosen]
        results.append(metrics.action_sensitivity(np.stack(outs)))  # (P, T, 3) ml
    r2 = [1.0 - np.sum((y_te[j] - p_te[j]) ** 2) / np.sum((y_te[j] - y_te[j].mean(0)) ** 2) for j in range(len(plans))]
    within = float(np.mean([r.within_plan for r in results]))
    between = float(np.mean([r.between_plans for r in results]))
    return {"features": features, "regressor": regressor, "ratio": between / within, "between_plans_ml": between,
            "within_plan_ml": within, "heldout_r2_within_plan": float(np.mean(r2))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-seed", type=int, default=1)
    ap.add_argument("--train-n", type=int, default=1200)
    ap.add_argument("--heldout-seed", type=int, default=2)
    ap.add_argument("--heldout-n", type=int, default=75)
    ap.add_argument("--plans", type=int, default=4)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    train = simulate_patients(a.train_seed, a.train_n)
    plans = cohort_plan_space()
    heldout = [simulate_case(ss, i, plans) for i, ss in enumerate(case_seeds(a.heldout_seed, a.heldout_n))]
    report = [ideal_ratio(train, heldout, plans, features, regressor, a.plans, a.samples, a.seed)
              for regressor in REGRESSORS for features in FEATURE_SETS]
    print(json.dumps({"config": vars(a), "ideal_sampler": report}, indent=2))


if __name__ == "__main__":
    main()
