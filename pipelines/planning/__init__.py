"""Treatment planning: score candidate plans with the world model and a survival model, search, evaluate, batch.

See docs/planning_design.md for the contracts (`scoring.PlanScorer`, `search.plan_case`, `batch.score_manifest`).
"""
