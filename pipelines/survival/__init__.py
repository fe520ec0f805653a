"""Inverse dynamics: survival models that score a (pre, post-treatment) tumour pair; see docs/planning_design.md.

`features` (the measured outcome features), `model` (`RiskPrediction`, the `SurvivalModel` protocol, survival curves
from a log-risk and a Breslow baseline, `load_survival_model`), `cox` (lifelines Cox on the features, stored as
JSON), `deep` (the 3D CNN of `models.survival`), `data` (crops, post labels and outcomes of a cohort), `train`,
`evaluate` (C-index, integrated Brier score, Kaplan-Meier plot), `plan_ranking` (every plan ranked on the
simulator's counterfactual outcomes vs the oracle) and `cli` (`mewm train|eval survival`).
"""
