import json, sys, numpy as np
from collections import defaultdict
from scipy.stats import spearmanr
def summ(path, name):
    pairs = json.load(open(path))['pairs']
    P = [p for p in pairs if not p.get('enlarged_crop')]
    pv = np.array([p['pred_viable_change_ml'] for p in P]); tv = np.array([p['true_viable_change_ml'] for p in P])
    by = defaultdict(list)
    for p in P: by[p['case_id']].append(p)
    within = []
    for ps in by.values():
        a = [q['pred_viable_change_ml'] for q in ps]; b = [q['true_viable_change_ml'] for q in ps]
        if np.std(a) > 0 and np.std(b) > 0: within.append(spearmanr(a, b)[0])
    # Lipiodol presence agreement: predicted has lipiodol vs plan has lipiodol
    ld = [p['lipiodol_dice'] for p in P if p['lipiodol_dice'] is not None]
    print(f"{name:6s} n={len(P)} spearman {spearmanr(pv, tv)[0]:.3f} within-patient {np.mean(within):.3f} (n {len(within)}) "
          f"MAE {np.mean(abs(pv - tv)):.1f} HUmean {np.mean([abs(p['pred_hu_mean'] - p['true_hu_mean']) for p in P]):.1f} "
          f"HUsd {np.mean([abs(p['pred_hu_sd'] - p['true_hu_sd']) for p in P]):.1f} lipDice {np.mean(ld):.3f} "
          f"pred mean change {pv.mean():.1f} (true {tv.mean():.1f})")
    if 'ceiling_viable_change_ml' in P[0]:
        cv = np.array([p['ceiling_viable_change_ml'] for p in P])
        w = [spearmanr([q['ceiling_viable_change_ml'] for q in ps], [q['true_viable_change_ml'] for q in ps])[0] for ps in by.values()]
        cl = [p['ceiling_lipiodol_dice'] for p in P if p['ceiling_lipiodol_dice'] is not None]
        print(f"  ceiling spearman {spearmanr(cv, tv)[0]:.3f} within {np.nanmean(w):.3f} MAE {np.mean(abs(cv - tv)):.1f} "
              f"HUmean {np.mean([abs(p['ceiling_hu_mean'] - p['true_hu_mean']) for p in P]):.1f} "
              f"HUsd {np.mean([abs(p['ceiling_hu_sd'] - p['true_hu_sd']) for p in P]):.1f} lipDice {np.mean(cl):.3f} mean change {cv.mean():.1f}")
for arg in sys.argv[1:]:
    name, path = arg.split('=')
    summ(path, name)
