"""Where the world model's sampling time goes on this machine: the figures behind the sampler's batch sizes and
channels-last weights (`pipelines/worldmodel/simulate.py` ``DECODE_BATCH``, `WorldModel.max_batch`, `weights._load`).

1. denoiser milliseconds per row at 2–64 rows per call, float32 and bfloat16 autocast;
2. decoder and segmenter milliseconds per crop at 1, 8 and 40 crops per call;
3. a whole simulation (8 plans × 5 samples, batched, and one plan and sample per call) with the shipped channels-last
   weights and with them converted back to the contiguous layout, in both precisions.

Usage: .venv/bin/python scripts/profile_sampler.py [WEIGHTS_DIR]   (default models/weights; a few minutes on 2 cores)
Not a benchmark of record: `mewm bench dynamics` writes the card's figures.
"""

import sys
import time
from dataclasses import replace

import torch

from pipelines.cohort.plan_space import cohort_plan_space
from pipelines.samples import list_sample_cases, load_sample_case
from pipelines.worldmodel.bench import _spread
from pipelines.worldmodel.weights import load_world_model


def per_call(f, reps: int = 3) -> float:
    f()  # warm-up
    t0 = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t0) / reps


def main(weights: str) -> None:
    world = load_world_model(weights)
    c, lat = world.dynamics.config["latent_channels"], world.crop.crop_size[0] // world.autoencoder.downsampling
    size = world.crop.crop_size[0]
    with torch.inference_mode():
        for rows in (2, 16, 32, 48, 64):
            x, pre = torch.randn(rows, c, lat, lat, lat), torch.randn(rows, c, lat, lat, lat)
            mask, ctx = torch.zeros(rows, 2, lat, lat, lat), world.dynamics.encode_plans([None] * rows)
            t = torch.full((rows,), 500)
            ms = {p: 1000 * per_call(lambda: _run(replace(world, precision=p), x, t, pre, mask, ctx)) / rows
                  for p in ("float32", "bfloat16")}
            print(f"denoiser, {rows:2d} rows per call: " + ", ".join(f"{p} {v:.1f} ms/row" for p, v in ms.items()))
        for n in (1, 8, 40):
            z, img = torch.randn(n, c, lat, lat, lat), torch.rand(n, 1, size, size, size) * 2 - 1
            for p in ("float32", "bfloat16"):
                w = replace(world, precision=p)
                d = per_call(lambda: _decode(w, z), 2) * 1000 / n
                s = per_call(lambda: _segment(w, img), 2) * 1000 / n
                print(f"{n:2d} crops per call, {p}: decode {d:.0f} ms/crop, segment {s:.0f} ms/crop")
    case = load_sample_case(list_sample_cases()[0].case_id)
    plans = _spread(cohort_plan_space(), 8)
    for layout in ("channels_last_3d", "contiguous_format"):
        for m in (world.autoencoder, world.dynamics, world.segmenter):
            m.to(memory_format=getattr(torch, layout))
        for p in ("float32", "bfloat16"):
            w = replace(world, precision=p)
            batched = per_call(lambda: w.simulate(case, plans, samples=5), 1) / 40
            single = per_call(lambda: w.simulate(case, plans[:1], samples=1), 3)
            print(f"{layout}, {p}: batched {batched:.3f} s/sample, one at a time {single:.3f} s/sample, "
                  f"ratio {single / batched:.2f}")


def _run(world, x, t, pre, mask, ctx):
    with world.autocast():
        return world.dynamics(x, t, pre, mask, ctx)


def _decode(world, z):
    with world.autocast():
        return world.autoencoder.decode(z)


def _segment(world, img):
    with world.autocast():
        return world.segmenter.predict(img)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "models/weights")
