"""One-off: the planning figures of several `mewm eval planning` runs on the patients they share (the per-patient
rows of their ``.patients.jsonl``), with the same bootstrap as the reports, and how often each run's most common
world-model plan was picked.

    python scripts/compare_planning_reports.py models/cards/planning_evaluation_v9_blended.patients.jsonl \
        models/cards/planning_evaluation.patients.jsonl
"""

import json
import sys
from collections import Counter

from pipelines.planning.evaluate import summarise


def main(paths: list[str]) -> None:
    runs = {p: {r["case_id"]: r for r in map(json.loads, open(p).read().splitlines()) if r.get("methods")}
            for p in paths}
    shared = sorted(set.intersection(*(set(rows) for rows in runs.values())))
    print(f"{len(shared)} patients in every run")
    for path, rows in runs.items():
        picked = [rows[c] for c in shared]
        summary = summarise(picked)["world_model"]
        plans = Counter(r["methods"]["world_model"]["plan"] for r in picked).most_common(1)
        settings = picked[0]["settings"]
        print(f"{path} ({settings.get('world_model_precision')}):")
        for key in ("f1", "f1_no_lipiodol", "regret_months", "top3_hit"):
            m = summary[key]
            print(f"  {key}: {m['mean']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]")
        print(f"  most common plan: {plans[0][0]} ({plans[0][1]} of {len(picked)})")


if __name__ == "__main__":
    main(sys.argv[1:])
