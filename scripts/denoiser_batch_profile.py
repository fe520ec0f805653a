"""Why batching gains what it gains on this CPU: the dynamics denoiser's cost per row at several batch sizes.

A profile, not a benchmark of the product (`mewm bench dynamics` is): one forward pass of the embedded denoiser on
random latents of the training-crop size, ``repeats`` times per batch size (the median is reported), and the share
of the time spent in 3D convolutions (torch.profiler). If the convolutions cost about the same per row at 3 rows (one
sample, three guidance branches: a one-at-a-time call) as at 30 (a batched call), the denoiser is bound by arithmetic
already at 3 rows, and batching can only save the work done once per call (crop, encode), not denoiser time.

Usage: .venv/bin/python scripts/denoiser_batch_profile.py [WEIGHTS] [--batches 3,30,120] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from pipelines.worldmodel.weights import load_world_model


def denoiser_inputs(model: torch.nn.Module, latent: tuple[int, ...], rows: int, seed: int = 0) -> tuple:
    """Random ``(x_t, t, pre_latent, masks, context)`` for ``rows`` rows (fixed seed)."""
    g = torch.Generator().manual_seed(seed)
    c = model.config["latent_channels"]
    return (torch.randn(rows, c, *latent, generator=g), torch.full((rows,), 500, dtype=torch.long),
            torch.randn(rows, c, *latent, generator=g), (torch.rand(rows, 2, *latent, generator=g) > 0.5).float(),
            torch.randn(rows, 8, model.config["plan_dim"], generator=g))


@torch.inference_mode()
def profile_rows(model: torch.nn.Module, latent: tuple[int, ...], rows: int, repeats: int) -> dict[str, float]:
    """Median ms per row of one forward pass, and the share of CPU time in convolutions."""
    inputs = denoiser_inputs(model, latent, rows)
    model(*inputs)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(*inputs)
        times.append(time.perf_counter() - t0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model(*inputs)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if "convolution" in e.key)
    ms_row = statistics.median(times) / rows * 1000
    return {"rows": rows, "ms_per_row": ms_row, "conv_share": conv / total, "conv_ms_per_row": ms_row * conv / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", nargs="?", default=None, help="world-model weights (default: the configured)")
    parser.add_argument("--batches", default="3,30,120", help="rows per call, comma-separated")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    world = load_world_model(args.weights)
    model = world.dynamics.eval()
    latent = tuple(s // world.autoencoder.downsampling for s in world.crop.crop_size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, latent {latent}")
    results = [profile_rows(model, latent, int(b), args.repeats) for b in args.batches.split(",")]
    base = results[0]
    for r in results:
        print(f"{r['rows']:>4} rows: {r['ms_per_row']:.1f} ms/row (convolutions {r['conv_share']:.0%}, "
              f"{r['conv_ms_per_row']:.1f} ms/row); per-row gain over {base['rows']} rows "
              f"{base['ms_per_row'] / r['ms_per_row']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
