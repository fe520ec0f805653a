"""A `PlanningResult` on disk and as text: what `mewm plan` writes and prints, and the tumour-board report.

Folder layout (written into a temporary sibling and renamed at the end, so it is never half-written)::

    planning.json                         settings, proposal, every ranked plan (risks per sample, survival, volumes)
    plans.csv                             the ranked table (one row per plan)
    report.html                           a self-contained report for the tumour board (images inline)
    survival.png                          predicted survival curves of the best plans
    pre_crop_ct.nii.gz, pre_crop_labels.nii.gz         the pre-treatment crop the models saw (RAS, crop grid)
    rank01/sample01_crop_ct.nii.gz, ..._labels.nii.gz  simulated outcomes of the best ``write_top`` plans
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from pathlib import Path
from typing import Any

from pipelines.caseio.nifti import write_nifti
from pipelines.output_dir import new_output_dir
from pipelines.worldmodel.weights import SAMPLER_NAMES
from pipelines.planning.figures import crop_slice_rgb, png_bytes, survival_figure, tumour_slice
from pipelines.volume import Volume

__all__ = ["write_planning", "planning_table_text", "planning_report_html", "DISCLAIMER"]

DISCLAIMER = ("Research use only — not for clinical use. Plans are ranked by research models (the embedded defaults "
              "were trained on a synthetic cohort; see each model's card for its data); they have not been validated "
              "on patients and must not guide the treatment of any patient.")


def write_planning(result, out: str | os.PathLike, write_top: int = 5, info: dict[str, Any] | None = None) -> Path:
    """Write ``result`` into the new folder ``out`` (module doc); return the folder.

    Raises:
        ConfigError: ``out`` exists and is not empty (results are never mixed or overwritten).
    """
    with new_output_dir(out) as tmp:
        affine = result.crop.crop_affine
        write_nifti(Volume(result.pre_hu, affine, "scalar", "pre-treatment crop"), tmp / "pre_crop_ct.nii.gz")
        write_nifti(Volume(result.pre_labels, affine, "label", "pre-treatment labels"),
                    tmp / "pre_crop_labels.nii.gz")
        data = result.to_dict()
        for rank, (score, row) in enumerate(zip(result.ranked, data["ranked"]), start=1):
            if rank > write_top:
                break
            sim = result.simulation(score)
            row["files"] = []
            for t in range(sim.crops_hu.shape[0]):
                stem = f"rank{rank:02d}/sample{t + 1:02d}"
                names = {"crop_ct": f"{stem}_crop_ct.nii.gz", "crop_labels": f"{stem}_crop_labels.nii.gz"}
                write_nifti(Volume(sim.crops_hu[t], affine, "scalar", "simulated crop"), tmp / names["crop_ct"])
                write_nifti(Volume(sim.labels[t], affine, "label", "simulated labels"), tmp / names["crop_labels"])
                row["files"].append(names)
        data.update(info or {})
        (tmp / "planning.json").write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
        result.table().to_csv(tmp / "plans.csv", index=False, float_format="%.6g")
        survival_png = _survival_png(result)
        (tmp / "survival.png").write_bytes(survival_png)
        (tmp / "report.html").write_text(planning_report_html(result, info=info, survival_png=survival_png))
    return Path(out).expanduser().resolve()


def _months(value: float) -> str:
    return "beyond horizon" if not math.isfinite(value) else f"{value:.1f}"


def planning_table_text(result, top: int = 10) -> str:
    """Plain-text ranked table for the command line."""
    header = ["rank", "plan", "protocol", "log-risk mean ± sd", "median OS (mo)", "RMST (mo)", "viable Δ ml"]
    rows = []
    for rank, s in enumerate(result.ranked[:top], start=1):
        viable = s.volumes.get("viable_tumour")
        rows.append([str(rank), s.plan.canonical(), s.plan.protocol.value, f"{s.risk_mean:+.3f} ± {s.risk_sd:.3f}",
                     _months(s.median_months), f"{s.rmst_months:.1f}",
                     "" if viable is None else f"{viable.mean_change_ml:+.2f}"])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    st = result.settings
    lines = [f"Case {result.case_id}: {len(result.ranked)} plans scored ({st['mode']} search, {st['samples']} "
             f"sample(s) each, seed {st['seed']}, {st['steps']} steps); {result.denoiser_passes} denoiser passes, "
             f"{result.timings.get('total', float('nan')):.1f} s",
             "  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    if len(result.ranked) > top:
        lines.append(f"... and {len(result.ranked) - top} more in plans.csv")
    if result.imputed:
        lines.append(f"Missing covariates replaced by the survival model's training means: "
                     f"{', '.join(result.imputed)}; the risks are estimates under that assumption.")
    if result.crop_note:
        lines.append(result.crop_note)
    lines.append(DISCLAIMER)
    return "\n".join(lines)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _survival_png(result, top: int = 5) -> bytes:
    """`survival_figure` as PNG bytes (the figure is closed)."""
    import io

    import matplotlib.pyplot as plt

    fig = survival_figure(result, top=top)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def planning_report_html(result, top: int = 5, info: dict[str, Any] | None = None,
                         survival_png: bytes | None = None) -> str:
    """A self-contained HTML report: proposal and rationale, ranked table, survival plot, pre vs simulated slices.

    ``survival_png``: the survival plot already rendered (`write_planning` writes it to a file too), else made here.
    """
    esc = html.escape
    survival_png = survival_png if survival_png is not None else _survival_png(result, top)
    affine = result.crop.crop_affine
    k = tumour_slice(result.pre_labels)
    pre_png = png_bytes(crop_slice_rgb(result.pre_hu, result.pre_labels, affine, k))
    table = result.table().head(25)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>MeWM Workbench planning report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px;font-size:12px}.warn{background:#fff3cd;padding:8px;"
        "border:1px solid #e0c36a}.row{display:flex;gap:12px;flex-wrap:wrap}figure{margin:0}</style></head><body>",
        f"<h1>Treatment planning report: case {esc(result.case_id)}</h1>",
        f"<p class='warn'><b>{esc(DISCLAIMER)}</b></p>",
    ]
    if result.proposal is not None:
        prop = result.proposal
        parts += [f"<h2>Policy proposal ({esc(str(prop.backend))}: {esc(str(prop.model))})</h2>",
                  f"<p>Drugs: {esc(', '.join(prop.drugs) or 'none')}; embolics: {esc(', '.join(prop.embolics))}; "
                  f"protocols: {esc(', '.join(p.value for p in prop.protocols))}.</p>",
                  f"<p>{esc(prop.rationale)}</p>"]
    if result.imputed:
        parts.append(f"<p class='warn'>Missing covariates replaced by the survival model's training means: "
                     f"{esc(', '.join(result.imputed))}; the risks are estimates under that assumption.</p>")
    if result.crop_note:
        parts.append(f"<p class='warn'>{esc(result.crop_note)}</p>")
    st = result.settings
    parts += [f"<h2>Ranked plans</h2><p>{len(result.ranked)} plans scored by {esc(st['mode'])} search, "
              f"{st['samples']} simulated outcomes each (seed {st['seed']}, {st['steps']} "
              f"{SAMPLER_NAMES.get(st.get('sampler', 'ddim'), st.get('sampler'))} steps, guidance "
              f"{st['guidance']}); survival model: {esc(str(st['survival_model']['kind']))}. Lower log-risk is "
              "better; ± is the sd over the simulated outcomes.</p>",
              table.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0),
              "<h2>Predicted survival</h2>", _img(survival_png, "predicted survival curves"),
              "<h2>Pre-treatment vs simulated post-treatment (axial slice through the tumour)</h2><div class='row'>",
              f"<figure>{_img(pre_png, 'pre-treatment crop')}<figcaption>pre-treatment</figcaption></figure>"]
    for rank, score in enumerate(result.ranked[:top], start=1):
        sim = result.simulation(score)
        png = png_bytes(crop_slice_rgb(sim.crops_hu[0], sim.labels[0], affine, k))
        parts.append(f"<figure>{_img(png, f'plan {rank}')}<figcaption>{rank}. {esc(score.plan.canonical())} "
                     "(sample 1)</figcaption></figure>")
    parts.append("</div>")
    if info:
        parts.append(f"<h2>Provenance</h2><pre>{esc(json.dumps(info, indent=2, default=str))}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)
