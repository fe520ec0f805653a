"""The `mewm` command line. The only module that parses argv; every command calls a `pipelines` function.

Typed `MeWMError`s become one plain line on stderr and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from models.errors import MeWMError
from pipelines.config import DEFAULT_STEPS

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Modules that add their own subcommands (see the end of `build_parser`); each defines `register(sub, groups)`.
# Command modules must import heavy packages (torch, transformers, ...) inside their command functions only.
COMMAND_MODULES: tuple[str, ...] = (
    "pipelines.policy.cli",
    "pipelines.planning.cli",
    "pipelines.planning.cli_batch",
    "pipelines.turing.cli",
    "pipelines.survival.cli",
    "pipelines.reasoning.cli",
    "pipelines.realdata.cli",
)

DISCLAIMER = "MeWM Workbench is for research only; its outputs are not for clinical use."


def _cmd_case_info(args: argparse.Namespace) -> int:
    from pipelines.caseio.info import case_info_text

    print(case_info_text(args.path, mask=args.mask, liver=args.liver, tumour=args.tumour, series=args.series,
                         config=args.config, as_json=args.json))
    return 0


def _cmd_cohort_generate(args: argparse.Namespace) -> int:
    from pipelines.cohort.generate import generate_cohort

    report = generate_cohort(n=args.n, seed=args.seed, out=args.out, dicom=args.dicom, size=args.size,
                             progress=not args.quiet, overwrite=args.overwrite, workers=args.workers)
    print(report.summary())
    return 0


def _cmd_cohort_followups(args: argparse.Namespace) -> int:
    from pipelines.cohort.followups import write_followups

    report = write_followups(args.cohort, per_patient=args.per_patient, seed=args.seed, workers=args.workers,
                             drug_matched=args.drug_matched, progress=not args.quiet)
    print(report.summary())
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from models.errors import ConfigError
    from pipelines.worldmodel import train

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}.")
        torch.set_num_threads(args.threads)
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}.")
    common = dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, resume=args.resume,
                  progress=not args.quiet, device=args.device, amp=args.amp, cache_workers=args.workers)
    if args.init_from:
        common["init_from"] = args.init_from
    if args.model == "dynamics":
        if not args.autoencoder:
            raise ConfigError("`mewm train dynamics` needs --autoencoder DIR (made by `mewm train autoencoder`).")
        fields = [f.strip() for f in (args.clinical_fields or "").split(",") if f.strip()]
        report = train.train_dynamics(args.manifest, args.autoencoder, args.out, clinical_fields=fields,
                                      prediction_type=args.prediction_type, response_token=args.response_token,
                                      response_lr_scale=args.response_lr_scale,
                                      embolic_balance=args.embolic_balance, change_weight=args.change_weight,
                                      whole_lesions=args.whole_lesion_crops, **common)
    elif args.model == "segmentation":
        if args.reconstructed_fraction is not None and not args.autoencoder:
            raise ConfigError("--reconstructed-fraction needs --autoencoder DIR (whose reconstructions to train on).")
        fraction = train.RECONSTRUCTED_FRACTION if args.reconstructed_fraction is None else args.reconstructed_fraction
        report = train.train_segmentation(args.manifest, args.out, autoencoder_dir=args.autoencoder,
                                          reconstructed_fraction=fraction, volume_weight=args.volume_weight,
                                          whole_lesions=args.whole_lesion_crops,
                                          model_config={**train.MODEL_CONFIGS["segmentation"], "norm": args.norm},
                                          **common)
    else:
        if args.autoencoder:
            raise ConfigError(f"--autoencoder is for `mewm train dynamics|segmentation` only, not {args.model}.")
        decoder = {}
        if args.decoder_channels:
            try:
                decoder["decoder_channels"] = [int(c) for c in args.decoder_channels.split(",")]
            except ValueError:
                raise ConfigError(f"--decoder-channels takes comma-separated integers (e.g. 16,48,64), got "
                                  f"{args.decoder_channels!r}.") from None
        if args.decoder_res_blocks is not None:
            decoder["decoder_num_res_blocks"] = args.decoder_res_blocks
        if decoder and not args.decoder_only:
            raise ConfigError("--decoder-channels / --decoder-res-blocks need --decoder-only (a new decoder on the "
                              "latents of --init-from).")
        report = train.train_autoencoder(args.manifest, args.out, decoder_only=args.decoder_only,
                                         tumour_weight=args.tumour_weight,
                                         model_config={**train.MODEL_CONFIGS["autoencoder"], **decoder}, **common)
    print(report.summary())
    return 0


def _cmd_train_response(args: argparse.Namespace) -> int:
    from pipelines.worldmodel.response import train_response

    fields = [f.strip() for f in (args.clinical_fields or "").split(",") if f.strip()]
    report = train_response(args.manifest, args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                            seed=args.seed, resume=args.resume, progress=not args.quiet, clinical_fields=fields)
    print(report.summary())
    for name, fig in report.extra["val_figures"].items():
        print(f"  held-out {name}: Spearman {fig['spearman']:.3f}, mean abs. error {fig['mae']:.3f}")
    return 0


def _cmd_eval_response(args: argparse.Namespace) -> int:
    from pipelines.config import load_config
    from pipelines.worldmodel.response_eval import evaluate_response

    weights = args.weights or load_config(args.config).worldmodel.weights_dir
    report = evaluate_response(args.cohort, weights, patients=args.patients, out=args.out,
                               progress=not args.quiet)
    for line in report["summary"]:
        print(line)
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from pipelines.config import load_config
    from pipelines.progress import TqdmProgress
    from pipelines.samples import resolve_case
    from pipelines.worldmodel.simulation_files import volume_change_table, write_simulation
    from pipelines.worldmodel.weights import load_world_model

    config = load_config(args.config).worldmodel
    world = load_world_model(args.weights or config.weights_dir, max_crop_voxels=config.max_crop_voxels,
                             precision=args.precision or config.precision,
                             response_guidance=_response_guidance(args, config),
                             sampler=_sampler(args, config))
    case = resolve_case(args.case)
    result = world.simulate(case, args.plan, samples=args.samples, seed=args.seed, steps=args.steps,
                            guidance=args.guidance, progress=None if args.quiet else TqdmProgress("simulate", "step"))
    out = write_simulation(result, args.out, info={"case": str(args.case), "weights": str(world.weights_dir)})
    print(volume_change_table(result))
    for note in (result.crop_note, result.clinical_note):
        if note:
            print(f"Note: {note}")
    print(f"Wrote {out}")
    return 0



def _cmd_eval(args: argparse.Namespace) -> int:
    import json

    from pipelines.config import load_config
    from pipelines.worldmodel.evaluate import evaluate_dynamics, evaluate_segmentation

    config = load_config(args.config).worldmodel
    weights = args.weights or config.weights_dir
    if args.model == "dynamics":
        report = evaluate_dynamics(args.cohort, weights, patients=50 if args.patients is None else args.patients,
                                   plans_per_patient=args.plans, samples=args.samples, seed=args.seed,
                                   steps=args.steps, guidance=args.guidance,
                                   precision=args.precision or config.precision, out=args.out,
                                   response_guidance=_response_guidance(args, config),
                                   sampler=_sampler(args, config),
                                   without_labs=args.without_labs, progress=not args.quiet)
    else:
        report = evaluate_segmentation(args.cohort, weights, patients=args.patients, out=args.out,
                                       progress=not args.quiet)
    print(json.dumps({k: {"value": v["value"], "target": v["target"], "pass": v["pass"], "baseline": v["baseline"]}
                      for k, v in report["metrics"].items()}, indent=2))
    return 0


def _cmd_eval_drugs(args: argparse.Namespace) -> int:
    import json

    from pipelines.config import load_config
    from pipelines.worldmodel.drug_response import evaluate_drug_response

    config = load_config(args.config).worldmodel
    drugs = tuple(d.strip() for d in args.drugs.split(",") if d.strip())
    embolics = tuple(e.strip() for e in args.embolics.split(",") if e.strip())
    report = evaluate_drug_response(args.cohort, args.weights or config.weights_dir, patients=args.patients,
                                    samples=args.samples, seed=args.seed, steps=args.steps, guidance=args.guidance,
                                    precision=args.precision or config.precision, drugs=drugs, embolics=embolics,
                                    response_guidance=_response_guidance(args, config),
                                    sampler=_sampler(args, config),
                                    out=args.out, progress=not args.quiet)
    shown = ("value", "interval_95", "ceiling", "segmenter_ceiling", "response_token")
    print(json.dumps({k: {key: v[key] for key in shown if key in v} for k, v in report["metrics"].items()}, indent=2))
    for r in report["drug_effect_ml"]:
        print(f"{r['drug']}: viable change vs no drug {r['simulated']:+.1f} ml simulated, {r['true']:+.1f} ml true")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import json

    from pipelines.config import load_config
    from pipelines.samples import resolve_case
    from pipelines.worldmodel.bench import bench_dynamics

    config = load_config(args.config).worldmodel
    weights = args.weights or config.weights_dir
    case = resolve_case(args.case) if args.case else None
    precisions = tuple(p.strip() for p in args.precision.split(",") if p.strip())
    report = bench_dynamics(weights, plans=args.plans, samples=args.samples, steps=args.steps, repeats=args.repeats,
                            precisions=precisions, sampler=_sampler(args, config), case=case, out=args.out,
                            progress=not args.quiet)
    print(json.dumps({k: report[k] for k in ("precision", "batched", "one_at_a_time", "speedup", "seconds_per_plan",
                                              "denoiser", "reference", "peak_rss_mb")}, indent=2))
    for run in report["runs"][1:]:
        print(f"{run['precision']}: speed-up {run['speedup']['value']:.2f}x, {run['seconds_per_plan']:.2f} s per plan")
    return 0


# `WorldModel.precision` choices (kept here so that `--help` needs no torch import).
PRECISIONS = ("float32", "bfloat16")
SAMPLERS = ("ddim", "dpm_solver")  # `pipelines.worldmodel.weights.SAMPLERS`
PRECISION_HELP = ("compute dtype of the networks (default: [worldmodel] precision, float32); bfloat16 is several "
                  "times faster on CPUs with AMX / AVX512-BF16 and gives slightly different samples")


def _response_guidance(args: argparse.Namespace, config) -> float:
    """``--response-guidance``, else the configured ``[worldmodel] response_guidance``."""
    return config.response_guidance if args.response_guidance is None else args.response_guidance


def _sampler(args: argparse.Namespace, config) -> str:
    """``--sampler``, else the configured ``[worldmodel] sampler``."""
    return args.sampler or config.sampler


def _add_sampling_arguments(parser: argparse.ArgumentParser, samples: int, seed_help: str) -> None:
    """``--samples --seed --steps --guidance --weights`` of the commands that sample the world model."""
    parser.add_argument("--samples", type=int, default=samples, help=f"samples per plan (default {samples})")
    parser.add_argument("--seed", type=int, default=0, help=seed_help)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"denoising steps of the sampler (default {DEFAULT_STEPS})")
    parser.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance scale (default 2.0)")
    parser.add_argument("--response-guidance", type=float,
                        help="guidance scale of the dynamics model's response token alone (default: [worldmodel] "
                             "response_guidance; equal to --guidance = plain classifier-free guidance)")
    parser.add_argument("--sampler", choices=SAMPLERS,
                        help="the dynamics model's sampler: ddim or dpm_solver (DPM-Solver++, the same samples in "
                             "fewer steps) (default: [worldmodel] sampler)")
    parser.add_argument("--weights", help="world-model weights folder (default: [worldmodel] weights_dir)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mewm", description=f"MeWM Workbench command line. {DISCLAIMER}")
    p.add_argument("--config", help="TOML config file (default: $MEWM_CONFIG, else built-in defaults)")
    sub = p.add_subparsers(dest="command", required=True)

    case = sub.add_parser("case", help="inspect cases").add_subparsers(dest="case_command", required=True)
    info = case.add_parser("info", help="print what the loader understood about an image (and masks)")
    info.add_argument("path", help="NIfTI/NRRD/MHA file, DICOM series folder, or .zip of DICOM files")
    info.add_argument("--mask", help="label image on the same grid (0 background, 1 liver, 2 tumour, ...)")
    info.add_argument("--liver", help="binary liver mask (alternative to --mask)")
    info.add_argument("--tumour", help="binary tumour mask (alternative to --mask)")
    info.add_argument("--series", help="series instance UID to use when a DICOM folder holds several")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(func=_cmd_case_info)

    cohort = sub.add_parser("cohort", help="the virtual HCC-TACE cohort").add_subparsers(
        dest="cohort_command", required=True)
    gen = cohort.add_parser("generate", help="simulate a cohort of virtual patients with known ground truth")
    gen.add_argument("--n", type=int, required=True, help="number of patients")
    gen.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    gen.add_argument("--out", required=True, help="output directory (must be empty or absent)")
    gen.add_argument("--dicom", type=int, default=0, help="also write a DICOM series for the first N cases")
    gen.add_argument("--size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                     help="volume size in voxels (default: the simulator's standard grid)")
    gen.add_argument("--workers", type=int, default=1, help="processes to use")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing cohort in --out")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=_cmd_cohort_generate)
    fol = cohort.add_parser("followups", help="add simulated follow-ups under other plans to a training cohort "
                                              "(for `mewm train dynamics`; never on an evaluation cohort)")
    fol.add_argument("--cohort", required=True, help="a folder written by `mewm cohort generate`")
    fol.add_argument("--per-patient", type=int, default=3, help="extra plans per patient (default 3)")
    fol.add_argument("--seed", type=int, default=0, help="plan and dose draws (same seed, same files)")
    fol.add_argument("--drug-matched", type=int, default=0,
                     help="up to N more per patient with the administered plan's embolics and other drugs "
                          "(pairs that differ in the drug only; default 0)")
    fol.add_argument("--workers", type=int, default=1, help="processes to use")
    fol.add_argument("--quiet", action="store_true", help="no progress bar")
    fol.set_defaults(func=_cmd_cohort_followups)

    groups = {
        "train": sub.add_parser("train", help="train a model on a cohort manifest").add_subparsers(
            dest="train_command", required=True, metavar="MODEL"),
        "eval": sub.add_parser("eval", help="evaluate a model on a held-out cohort").add_subparsers(
            dest="eval_command", required=True, metavar="MODEL"),
        "bench": sub.add_parser("bench", help="benchmarks on this machine (speed, memory)").add_subparsers(
            dest="bench_command", required=True, metavar="WHAT"),
    }
    for model in ("autoencoder", "segmentation", "dynamics"):
        tr = groups["train"].add_parser(model, help=f"train the world model's {model} network")
        tr.add_argument("--manifest", required=True, help="cohort manifest.csv (or its folder)")
        tr.add_argument("--out", required=True, help="output directory (checkpoint, MODEL_CARD.md, train_log.jsonl)")
        tr.add_argument("--autoencoder", help="trained autoencoder directory (dynamics: required; segmentation: also "
                        "train on its reconstructions of the crops, i.e. on crops like the simulated ones)")
        if model in ("segmentation", "dynamics"):
            tr.add_argument("--whole-lesion-crops", type=int, default=0, metavar="LARGEST",
                            help="also train on each lesion larger than the training crop in the smallest crop "
                                 "(sides grown by 16 voxels, up to LARGEST) that holds it whole, as `mewm simulate` "
                                 "crops and measures it (default 0: training crops only; e.g. 96, the default "
                                 "[worldmodel] max_crop_voxels)")
        if model == "dynamics":
            tr.add_argument("--clinical-fields",
                            help="also condition on these covariates, comma-separated, of "
                                 "models.clinical_encoder.CLINICAL_FIELDS (afp, n_lesions, max_diameter_mm, "
                                 "vascular_invasion); default: the CT and the plan only")
            tr.add_argument("--prediction-type", choices=("epsilon", "v_prediction"), default="epsilon",
                            help="what the denoiser predicts: the noise (epsilon, default) or v (v_prediction)")
            tr.add_argument("--response-token", action="store_true",
                            help="also condition on the pair's measured response (teacher forcing); sampling then "
                                 "needs a response predictor beside the weights (`mewm train response`)")
            tr.add_argument("--response-lr-scale", type=float, default=1.0,
                            help="with --response-token: the token's encoder learns at lr times this (default 1)")
            tr.add_argument("--embolic-balance", type=float, default=0.0, metavar="POWER",
                            help="draw the training pairs with the plans' embolic groups balanced: each pair "
                                 "weighs n_group^-POWER (0 default: as they come; 0.5: groups by the square root "
                                 "of their size; 1: every group equally often)")
            tr.add_argument("--change-weight", type=float, default=0.0, metavar="W",
                            help="weigh each latent cell's error by 1 + W x its fraction in the change region (the "
                                 "lesion and its margin); default 0: the plain MSE")
        if model == "segmentation":
            tr.add_argument("--reconstructed-fraction", type=float,
                            help="share of training crops replaced by their autoencoder reconstruction "
                                 "(with --autoencoder; default worldmodel.train.RECONSTRUCTED_FRACTION = 0.5)")
            tr.add_argument("--volume-weight", type=float, default=0.0,
                            help="add this times the relative error of the viable-tumour, necrosis and Lipiodol "
                                 "volumes to the loss (default 0: DiceCE alone; the segmenter measures volumes)")
            tr.add_argument("--norm", choices=("instance", "batch"), default="instance",
                            help="the segmenter's normalisation: instance (default) or batch (keeps absolute HU "
                                 "visible; --init-from an instance-norm checkpoint carries its weights over)")
        if model == "autoencoder":
            tr.add_argument("--decoder-only", action="store_true",
                            help="train only the decoder of --init-from: the encoder and latents stay frozen, so "
                                 "dynamics models trained on them stay valid")
            tr.add_argument("--decoder-channels", help="with --decoder-only: a wider decoder, channels per level "
                            "(comma-separated, as many levels as the encoder; e.g. 16,48,64)")
            tr.add_argument("--decoder-res-blocks", type=int,
                            help="with --decoder-only: residual blocks per decoder level")
            tr.add_argument("--tumour-weight", type=float, default=1.0,
                            help="L1 weight of the tumour (grown by 2 voxels) relative to the rest (default 1)")
        tr.add_argument("--steps", type=int, help="optimiser steps (default per model: worldmodel.train.DEFAULTS)")
        tr.add_argument("--batch-size", type=int, help="batch size (default per model)")
        tr.add_argument("--lr", type=float, help="learning rate (default per model)")
        tr.add_argument("--seed", type=int, default=0, help="random seed (same seed, same weights)")
        tr.add_argument("--resume", action="store_true", help="continue the run saved in --out")
        tr.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
        tr.add_argument("--workers", type=int, default=1,
                        help="processes that build the crop cache on a manifest's first run (default 1; the cache "
                             "is the same whatever the number)")
        tr.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, or auto (cuda if torch sees a "
                        "GPU); a GPU torch cannot use is an error, never a silent CPU run")
        tr.add_argument("--amp", action="store_true",
                        help="bf16 autocast of the forward passes (CUDA GPUs, or CPUs with AMX / AVX512-BF16)")
        tr.add_argument("--quiet", action="store_true", help="no progress bar")
        tr.add_argument("--init-from", help=f"fine-tune this {model} checkpoint (e.g. models/weights/{model}); "
                        "same network config and crops; default lr lowered (worldmodel.train.FINE_TUNE_LR)")
        tr.set_defaults(func=_cmd_train, model=model, init_from=None, reconstructed_fraction=None,
                        clinical_fields=None)

    sim = sub.add_parser("simulate", help="simulate the post-TACE tumour of a case under one or more plans")
    sim.add_argument("--case", required=True,
                     help="a sample case id, a cohort case folder (<cohort>/cases/<id>) or MANIFEST.csv#ID")
    sim.add_argument("--plan", required=True, action="append",
                     help='a plan, e.g. "Lobaplatin; Epirubicin; Lipiodol" (repeat for more plans)')
    sim.add_argument("--out", required=True, help="new output folder (NIfTI per plan and sample, simulation.json)")
    _add_sampling_arguments(sim, 5, "noise seed (same seed, same result)")
    sim.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP)
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.set_defaults(func=_cmd_simulate)

    for model in ("dynamics", "segmentation"):
        ev = groups["eval"].add_parser(model, help=f"evaluate the world model's {model} on a held-out virtual cohort")
        ev.add_argument("--cohort", required=True, help="held-out cohort folder (mewm cohort generate, another seed)")
        ev.add_argument("--out", help="JSON report (default: <weights>/<model>/evaluation.json)")
        ev.add_argument("--patients", type=int,
                        help="first N patients (default: 50 for dynamics, all for segmentation)")
        ev.add_argument("--plans", type=int, default=4,
                        help="plans per patient, the administered one included (default 4)")
        _add_sampling_arguments(ev, 3, "plan choice, noise and C2ST seed")
        if model == "dynamics":
            ev.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP)
            ev.add_argument("--without-labs", action="store_true",
                            help="simulate every case with its covariates removed (ablation of a dynamics model "
                                 "trained with --clinical-fields)")
        ev.add_argument("--quiet", action="store_true", help="no progress bar")
        ev.set_defaults(func=_cmd_eval, model=model)

    from pipelines.worldmodel.drug_probe import PROBE_DRUGS, PROBE_EMBOLICS  # no torch import

    ed = groups["eval"].add_parser("drugs", help="does the dynamics model separate drugs? plans differing only in "
                                                 "the drug, against the virtual cohort's truth")
    ed.add_argument("--cohort", required=True, help="held-out cohort folder (mewm cohort generate, another seed)")
    ed.add_argument("--out", help="JSON report (default: <weights>/dynamics/drug_response.json)")
    ed.add_argument("--patients", type=int, default=30, help="first N patients (default 30)")
    _add_sampling_arguments(ed, 3, "noise and bootstrap seed")
    ed.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP)
    ed.add_argument("--drugs", default=",".join(PROBE_DRUGS),
                    help=f"comma-separated drugs, one plan each (default: one per class, {','.join(PROBE_DRUGS)})")
    ed.add_argument("--embolics", default=",".join(PROBE_EMBOLICS),
                    help=f"comma-separated embolics every probe plan shares (default: {','.join(PROBE_EMBOLICS)})")
    ed.add_argument("--quiet", action="store_true", help="no progress bar")
    ed.set_defaults(func=_cmd_eval_drugs)

    tres = groups["train"].add_parser("response", help="train the world model's response predictor (expected "
                                                       "viable / necrosis / Lipiodol fractions under a plan)")
    tres.add_argument("--manifest", required=True, help="cohort manifest.csv (or its folder) with pre/post pairs")
    tres.add_argument("--out", required=True, help="output directory (checkpoint, MODEL_CARD.md, train_log.jsonl)")
    tres.add_argument("--clinical-fields", help="also read these covariates, comma-separated "
                      "(models.clinical_encoder.CLINICAL_FIELDS); default: the CT and the plan only")
    tres.add_argument("--steps", type=int, help="optimiser steps (default worldmodel.response.RESPONSE_DEFAULTS)")
    tres.add_argument("--batch-size", type=int, help="batch size (default 64)")
    tres.add_argument("--lr", type=float, help="learning rate (default 0.002)")
    tres.add_argument("--seed", type=int, default=0, help="random seed (same seed, same weights)")
    tres.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    tres.add_argument("--quiet", action="store_true", help="no progress bar")
    tres.set_defaults(func=_cmd_train_response)

    eres = groups["eval"].add_parser("response", help="evaluate the response predictor against the virtual "
                                                      "cohort's counterfactual truth")
    eres.add_argument("--cohort", required=True, help="held-out cohort folder (mewm cohort generate, another seed)")
    eres.add_argument("--weights", help="world-model weights folder (default: [worldmodel] weights_dir)")
    eres.add_argument("--out", help="JSON report (default: <weights>/response/evaluation.json)")
    eres.add_argument("--patients", type=int, help="first N patients (default: all)")
    eres.add_argument("--quiet", action="store_true", help="no progress bar")
    eres.set_defaults(func=_cmd_eval_response)

    bd = groups["bench"].add_parser("dynamics", help="samples/s batched vs one at a time, passes per plan, memory")
    bd.add_argument("--weights", help="world-model weights folder (default: [worldmodel] weights_dir)")
    bd.add_argument("--out", help="JSON report (default: <weights>/dynamics/benchmark.json)")
    bd.add_argument("--case", help="case to simulate (as for `mewm simulate --case`; default: the first sample case)")
    bd.add_argument("--plans", type=int, default=8, help="plans (default 8)")
    bd.add_argument("--samples", type=int, default=5, help="samples per plan (default 5)")
    bd.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                    help=f"denoising steps of the sampler (default {DEFAULT_STEPS})")
    bd.add_argument("--sampler", choices=SAMPLERS, help="ddim or dpm_solver (default: [worldmodel] sampler)")
    bd.add_argument("--repeats", type=int, default=2, help="timed repeats of each mode (default 2)")
    bd.add_argument("--precision", default=",".join(PRECISIONS),
                    help="comma-separated compute dtypes to time, the headline first (default: float32,bfloat16)")
    bd.add_argument("--quiet", action="store_true", help="no progress bar")
    bd.set_defaults(func=_cmd_bench)

    # Commands of other packages: each module's `register(sub, groups)` adds its own subcommands, so features do
    # not all edit this file. `groups` holds the "train", "eval" and "bench" subparser groups.
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub, groups)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MeWMError as e:
        print(f"mewm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mewm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
