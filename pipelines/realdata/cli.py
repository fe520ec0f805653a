"""`mewm import hcc-tace-seg`, `mewm import synthetic-download`, `mewm register` and `mewm eval realdata`
(registered through `pipelines.cli.COMMAND_MODULES`)."""

from __future__ import annotations

import argparse

from pipelines.config import DEFAULT_STEPS

__all__ = ["register"]


def _cmd_import(args: argparse.Namespace) -> int:
    from pipelines.realdata.hcc_tace_seg import import_hcc_tace_seg

    summary = import_hcc_tace_seg(args.src, args.clinical, args.out, retry_skipped=args.retry_skipped,
                                  min_liver_ml=args.min_liver_ml, config=args.config, progress=not args.quiet)
    print(summary.summary())
    return 0


def _cmd_synthetic(args: argparse.Namespace) -> int:
    from pipelines.realdata.synthetic_download import write_synthetic_download

    clinical = write_synthetic_download(args.out)
    print(f"Wrote a synthetic HCC-TACE-Seg-like download (not patient data) to {args.out}\n"
          f"  next: mewm import hcc-tace-seg --src {args.out} --clinical {clinical} --out COHORT_DIR")
    return 0


def _cmd_register(args: argparse.Namespace) -> int:
    from pipelines.realdata.register import register_cohort

    stages = ("rigid", "affine", "deformable") if args.deformable else ("rigid", "affine")
    summary = register_cohort(args.manifest, weights_dir=args.weights, stages=stages, seed=args.seed,
                              iterations=args.iterations, overwrite=args.overwrite, config=args.config,
                              progress=not args.quiet)
    print(summary.summary())
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import json

    from pipelines.realdata.evaluate import evaluate_realdata

    report = evaluate_realdata(args.cohort, weights_dir=args.weights, out=args.out, folds=args.folds,
                               samples=args.samples, steps=args.steps, seed=args.seed, config=args.config,
                               progress=not args.quiet)
    print(json.dumps({k: report[k] for k in ("n", "survival", "response", "plan_choice")}, indent=2))
    print(f"Wrote {report['out']}")
    return 0


def register(sub: argparse._SubParsersAction, groups: dict[str, argparse._SubParsersAction]) -> None:
    """Add ``mewm import ...``, ``mewm register`` and ``mewm eval realdata``."""
    imp = sub.add_parser("import", help="import a real-data download into a cohort manifest").add_subparsers(
        dest="import_command", required=True, metavar="SOURCE")
    h = imp.add_parser("hcc-tace-seg", help="a local HCC-TACE-Seg download (TCIA, CC BY 4.0): CT, expert SEG masks, "
                                            "follow-up CT, clinical spreadsheet → manifest + import report")
    h.add_argument("--src", required=True, help="folder of the download (NBIA layout; indexed by DICOM UIDs)")
    h.add_argument("--clinical", required=True, help="HCC-TACE-Seg_clinical_data-V2.xlsx (sheet 'data table')")
    h.add_argument("--out", required=True, help="cohort folder to write; a rerun into it resumes")
    h.add_argument("--retry-skipped", action="store_true", help="redo the patients an earlier run skipped")
    h.add_argument("--min-liver-ml", type=float, default=300.0,
                   help="a SEG liver below this volume is a partial segmentation: skipped (default 300 ml)")
    h.add_argument("--quiet", action="store_true", help="no progress bar")
    h.set_defaults(func=_cmd_import)
    s = imp.add_parser("synthetic-download", help="write a tiny synthetic stand-in of an HCC-TACE-Seg download "
                                                  "(for the CPU smoke run; not patient data)")
    s.add_argument("--out", required=True, help="folder to write")
    s.set_defaults(func=_cmd_synthetic)

    r = sub.add_parser("register", help="align each imported follow-up CT to its baseline (SimpleITK rigid + affine "
                                        "[+ deformable]), propagate the liver, pseudo-label the post-TACE tumour")
    r.add_argument("--manifest", required=True, help="imported cohort folder (or its manifest.csv)")
    r.add_argument("--weights", help="world-model weights folder whose segmenter pseudo-labels the post-TACE tumour "
                                     "(default: [worldmodel] weights_dir)")
    r.add_argument("--deformable", action="store_true", help="add a B-spline deformable stage after the affine one")
    r.add_argument("--iterations", type=int, default=200, help="optimiser iterations per stage (default 200)")
    r.add_argument("--seed", type=int, default=0, help="metric sampling seed (same seed, same transform)")
    r.add_argument("--overwrite", action="store_true", help="register again cases registered by an earlier run")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=_cmd_register)

    ev = groups["eval"].add_parser("realdata", help="an imported cohort: survival C-index with vs without the "
                                                    "simulated post-treatment image, mRECIST response prediction")
    ev.add_argument("--cohort", required=True, help="imported and registered cohort folder")
    ev.add_argument("--weights", help="world-model weights folder (default: [worldmodel] weights_dir)")
    ev.add_argument("--out", help="JSON report (default: <cohort>/evaluation_realdata.json)")
    ev.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5; fewer on tiny cohorts)")
    ev.add_argument("--samples", type=int, default=1, help="simulated post-treatment samples per case (default 1)")
    ev.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                    help=f"denoising steps of the simulation (default {DEFAULT_STEPS})")
    ev.add_argument("--seed", type=int, default=0, help="fold split and simulation seed")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=_cmd_eval)
