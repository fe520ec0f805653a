"""`mewm policy propose` (a case's agents, rationale and candidate count) and `mewm eval policy` (vs the oracle)."""

from __future__ import annotations

import argparse

__all__ = ["register", "proposal_text"]


def _plan_text(plan) -> str:
    return "none" if plan is None else f"{plan.canonical()} ({plan.protocol.value})"


def proposal_text(proposal, candidates: int) -> str:
    """The proposal as the command prints it (also handy in logs)."""
    lines = [
        f"Policy: {proposal.backend} ({proposal.model}), {proposal.attempts} attempt(s)",
        f"Protocols: {', '.join(p.value for p in proposal.protocols)}",
        f"Drugs: {', '.join(proposal.drugs) or 'none'}",
        f"Embolics: {', '.join(proposal.embolics)}",
        f"Preferred plan: {_plan_text(proposal.preferred)}",
        f"Candidate plans (at most 2 drugs, 2 embolics): {candidates}",
        "Rationale:",
        *[f"  {line}" for line in proposal.rationale.splitlines()],
        "Research use only; not for clinical use.",
    ]
    return "\n".join(lines)


def _cmd_propose(args: argparse.Namespace) -> int:
    import json

    from pipelines.config import load_config
    from pipelines.policy import load_policy
    from pipelines.samples import resolve_case

    overrides = {"policy.backend": args.backend} if args.backend else {}
    policy = load_policy(load_config(args.config, overrides=overrides))
    proposal = policy.propose(resolve_case(args.case))
    candidates = proposal.candidate_plans()
    if args.json:
        print(json.dumps({**proposal.to_dict(), "case": str(args.case), "n_candidates": len(candidates),
                          "candidates": [p.canonical() for p in candidates]}, indent=2))
    else:
        print(proposal_text(proposal, len(candidates)))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import json

    from pipelines.config import load_config
    from pipelines.policy import load_policy
    from pipelines.policy.evaluate import evaluate_policy

    overrides = {"policy.backend": args.backend} if args.backend else {}
    policy = load_policy(load_config(args.config, overrides=overrides))
    report = evaluate_policy(args.cohort, policy, patients=args.patients, out=args.out, progress=not args.quiet)
    print(json.dumps({k: report[k] for k in ("policy", "patients", "scored", "plan_space_size", "seconds",
                                              "summary")}, indent=2))
    if report["failed"]:
        print(f"{len(report['failed'])} case(s) failed; see 'failed' in the report.")
    return 0


def register(sub: argparse._SubParsersAction, groups: dict[str, argparse._SubParsersAction]) -> None:
    """Add ``mewm policy propose``."""
    pol = sub.add_parser("policy", help="policy backends: who proposes candidate TACE agents").add_subparsers(
        dest="policy_command", required=True)
    pr = pol.add_parser("propose", help="print the policy's proposal for a case: agents, rationale, candidates")
    pr.add_argument("--case", required=True,
                    help="a sample case id, a cohort case folder (<cohort>/cases/<id>) or MANIFEST.csv#ID")
    pr.add_argument("--backend", choices=("guideline", "openai", "hf"), help="policy backend (default: [policy])")
    pr.add_argument("--json", action="store_true", help="print JSON (with the candidate plans) instead of text")
    pr.set_defaults(func=_cmd_propose)

    ev = groups["eval"].add_parser("policy", help="a policy's preferred plan and candidate coverage vs the oracle")
    ev.add_argument("--cohort", required=True, help="a virtual cohort folder with its oracle (mewm cohort generate)")
    ev.add_argument("--backend", choices=("guideline", "openai", "hf"), help="policy backend (default: [policy])")
    ev.add_argument("--patients", type=int, help="first N patients (default: all)")
    ev.add_argument("--out", help="JSON report path (default: print the summary only)")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=_cmd_eval)
