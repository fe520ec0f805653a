"""`mewm study ...`: set up reader studies, add readers, read the results and export them from the command line.

The same `StudyStore` as the app (``[app] database_url``/``data_dir`` and ``[study] studies_dir`` of the config), so
a study made here is read in the app and the other way round. Changes are audited with the actor ``cli:<user>``.
"""

from __future__ import annotations

import argparse
import getpass
import json
from pathlib import Path

from pipelines.config import DEFAULT_STEPS

__all__ = ["register"]


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in a container without /etc/passwd entry
        return "cli"


def _store(args):
    from pipelines.turing.store import StudyStore

    return StudyStore.from_config(args.config)


def _view(args):
    from models.errors import StudySetupError
    from pipelines.turing.render import ViewSettings
    from pipelines.viewer import WINDOW_PRESETS

    if args.window not in WINDOW_PRESETS:
        raise StudySetupError(f"Unknown window {args.window!r}; use one of {', '.join(WINDOW_PRESETS)} (or --width "
                              "and --level).")
    preset = WINDOW_PRESETS[args.window]
    return ViewSettings(slices=args.slices, slice_gap_mm=args.gap_mm,
                        window_width=args.width if args.width is not None else preset.width,
                        window_level=args.level if args.level is not None else preset.level)


def _cmd_create(args: argparse.Namespace) -> int:
    from models.errors import StudySetupError
    from pipelines.progress import TqdmProgress

    view = _view(args)
    if bool(args.real_dir) != bool(args.synthetic_dir):
        raise StudySetupError("Give both --real-dir and --synthetic-dir (or neither, for a cohort --manifest).")
    if args.real_dir:
        from pipelines.turing.sources import folder_sources

        sources = folder_sources(args.real_dir, args.synthetic_dir, args.real, args.synthetic, seed=args.seed,
                                 config=args.config)
    else:
        from pipelines.config import load_config
        from pipelines.turing.sources import cohort_sources
        from pipelines.worldmodel.weights import load_world_model

        config = load_config(args.config)
        world = load_world_model(args.weights or config.worldmodel.weights_dir)
        sources = cohort_sources(args.manifest or config.app.sample_data_dir, world, args.real, args.synthetic,
                                 seed=args.seed, steps=args.steps, guidance=args.guidance, disjoint=args.disjoint,
                                 progress=None if args.quiet else TqdmProgress("simulate", "case"))
    study = _store(args).create_study(args.name, sources, view, seed=args.seed, context=args.context,
                                      actor=_actor(), progress=None if args.quiet else TqdmProgress("render", "item"))
    print(f"Study {study.id} ({study.name!r}): {study.real} real + {study.synthetic} synthetic items, open.")
    for line in sources.skipped:
        print(f"  left out: {line}")
    print(f"Add readers with: mewm study add-reader --study {study.id} --name NAME --role ROLE")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    studies = _store(args).studies()
    if not studies:
        print("No studies yet. Create one with `mewm study create` or in the app's Turing admin page.")
    for s in studies:
        print(f"{s.id:>4}  {s.status:<6}  {s.name}  ({s.real} real + {s.synthetic} synthetic; {s.readers} "
              f"reader(s), {s.answers} answer(s); created {s.created_at:%Y-%m-%d %H:%M})")
    return 0


def _cmd_add_reader(args: argparse.Namespace) -> int:
    reader = _store(args).add_reader(args.study, args.name, args.role, actor=_actor())
    print(f"Reader {reader.id} ({reader.name}) added. Access code (shown once, not stored): {reader.code}")
    return 0


def _cmd_reset_code(args: argparse.Namespace) -> int:
    reader = _store(args).reset_code(args.reader, actor=_actor())
    print(f"New access code for reader {reader.id} ({reader.name}) (shown once): {reader.code}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    _store(args).set_status(args.study, "open" if args.study_command == "open" else "closed", actor=_actor())
    print(f"Study {args.study} is now {'open' if args.study_command == 'open' else 'closed'}.")
    return 0


def _cmd_results(args: argparse.Namespace) -> int:
    store = _store(args)
    results = store.results(args.study)
    if args.json:
        from pipelines.worldmodel.metrics import json_safe

        print(json.dumps(json_safe(results.to_dict()), indent=2))
        return 0
    study = store.study(args.study)
    print(f"Study {study.id} ({study.name!r}), {study.status}: {results.overall.answers} answer(s) from "
          f"{len(results.per_reader)} reader(s). Research use only.")
    groups = [("overall", results.overall), *[(f"reader {k}", v) for k, v in results.per_reader.items()],
              *[(f"confidence {k}", v) for k, v in results.by_confidence.items()]]
    for name, g in groups:
        print(f"\n{name} ({g.answers} answers)")
        print(f"  sensitivity (synthetic called synthetic): {g.sensitivity.text()}")
        print(f"  specificity (real called real):           {g.specificity.text()}")
        print(f"  accuracy:                                 {g.accuracy.text()}")
        print(f"  synthetic judged real:                    {g.synthetic_judged_real.text()}")
    a = results.agreement
    kappa = "n/a" if a.kappa is None else f"{a.kappa:.3f}"
    print(f"\nFleiss' kappa: {kappa} ({a.items} item(s) × {a.readers} reader(s); {a.note})")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from pipelines.turing.export import answers_csv, summary_csv

    store = _store(args)
    out = Path(args.out)
    out.write_text(answers_csv(store.answer_rows(args.study)))
    written = [str(out)]
    if args.summary:
        Path(args.summary).write_text(summary_csv(store.results(args.study)))
        written.append(args.summary)
    store.log("exported", args.study, {"files": written}, actor=_actor())
    print(f"Wrote {', '.join(written)}")
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    for e in _store(args).audit(args.study):
        print(f"{e['at']}  {e['actor']:<16} study {e['study_id']}: {e['action']}  {json.dumps(e['details'])}")
    return 0


def register(sub, groups) -> None:
    """Add ``mewm study ...`` (see the module docstring)."""
    study = sub.add_parser("study", help="visual Turing-test reader studies (real vs synthetic post-TACE images)")
    cmds = study.add_subparsers(dest="study_command", required=True, metavar="ACTION")

    c = cmds.add_parser("create", help="render a new study's items (cohort + world model, or two NIfTI folders)")
    c.add_argument("--name", required=True, help="study name")
    c.add_argument("--manifest", help="cohort manifest.csv or folder (default: the sample cases)")
    c.add_argument("--real-dir", help="folder of real NIfTI crops (with --synthetic-dir instead of a cohort)")
    c.add_argument("--synthetic-dir", help="folder of synthetic NIfTI crops")
    c.add_argument("--real", type=int, default=5, help="real items (default 5)")
    c.add_argument("--synthetic", type=int, default=5, help="synthetic items (default 5)")
    c.add_argument("--seed", type=int, default=0, help="case choice, simulation noise and item order seed")
    c.add_argument("--slices", type=int, default=1, help="axial slices per item (odd, 1-7; default 1)")
    c.add_argument("--gap-mm", type=float, default=6.0, help="distance between slices (mm, default 6)")
    c.add_argument("--window", default="Soft tissue", help="window preset (Liver, Soft tissue, Bone, Lipiodol)")
    c.add_argument("--width", type=float, help="window width in HU (overrides the preset)")
    c.add_argument("--level", type=float, help="window level in HU (overrides the preset)")
    c.add_argument("--disjoint", action="store_true",
                   help="real and synthetic items from different patients (cohort only; default: the same patients)")
    c.add_argument("--context", action="store_true", help="also show the pre-treatment crop (cohort only)")
    c.add_argument("--weights", help="world-model weights folder (default: [worldmodel] weights_dir)")
    c.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                   help=f"denoising steps of the simulation (default {DEFAULT_STEPS})")
    c.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance (default 2.0)")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.set_defaults(func=_cmd_create)

    cmds.add_parser("list", help="the studies, with their readers and answers").set_defaults(func=_cmd_list)

    a = cmds.add_parser("add-reader", help="add a reader and print their access code (once)")
    a.add_argument("--study", type=int, required=True)
    a.add_argument("--name", required=True)
    a.add_argument("--role", default="", help="e.g. 'radiologist, 10 years'")
    a.set_defaults(func=_cmd_add_reader)

    r = cmds.add_parser("reset-code", help="give a reader a new access code (answers are kept)")
    r.add_argument("--reader", type=int, required=True)
    r.set_defaults(func=_cmd_reset_code)

    for action in ("open", "close"):
        s = cmds.add_parser(action, help=f"{action} a study for reading")
        s.add_argument("--study", type=int, required=True)
        s.set_defaults(func=_cmd_status)

    res = cmds.add_parser("results", help="sensitivity, specificity, accuracy (Wilson 95%% CI), Fleiss' kappa")
    res.add_argument("--study", type=int, required=True)
    res.add_argument("--json", action="store_true", help="print JSON")
    res.set_defaults(func=_cmd_results)

    e = cmds.add_parser("export", help="write every answer with its truth as CSV (and the summary)")
    e.add_argument("--study", type=int, required=True)
    e.add_argument("--out", required=True, help="answers CSV")
    e.add_argument("--summary", help="also write the summary statistics CSV here")
    e.set_defaults(func=_cmd_export)

    au = cmds.add_parser("audit", help="the audit log of study changes")
    au.add_argument("--study", type=int, help="one study only")
    au.set_defaults(func=_cmd_audit)
