"""Batch scoring: plan every case of a cohort manifest, on one machine (a process pool) or a Ray cluster.

`score_manifest(manifest, out, ...)` is a resumable recipe over an output folder::

    out/settings.json          the result-defining settings, written before the first case (a rerun must match)
    out/cases/<case>.json      one per scored case: the `PlanningResult` as strict JSON (the resume record)
    out/failed/<case>.json     one per case that could not be planned: error type and message
    out/results.csv|.parquet   one row per case (best plan, risk mean ± sd, median survival, 2nd/3rd plans,
                               seconds, status), rebuilt from the per-case JSON at the end of every run
    out/batch.json             settings, counts, timing and machine of the last run

Why it survives ``kill -9``: a case's JSON is written whole to a temporary file and renamed onto its name
(``os.replace`` is atomic), and only the driver process writes. A rerun skips every case that has a JSON, so
nothing is scored twice and nothing is lost; the results table is rebuilt from the JSON files, never appended to.
A case is in at most one of ``cases/`` and ``failed/`` (a retried success removes its failure record).

Why a bad case does not stop the batch: `score_case` is the batch's error boundary. Whatever goes wrong with one
case (a corrupt CT, no tumour mask, a plan the rules refuse, an unexpected bug) is recorded under ``failed/`` with
its type and message; the other cases go on. Only problems of the whole batch (other settings in the folder,
models that cannot be loaded) raise a `BatchError` (or the typed loading error itself).

Models are loaded once per worker (`ScoringWorker`), never per case: the world model and survival model of
``settings`` (and the policy, unless fixed candidate plans are given) through ``loader``, an import path
``"module:function"`` (default `load_scoring_models`) so that a worker in another process, or on another Ray node,
can import it. With more than one worker each runs torch with one thread (the workers share the cores).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import math
import os
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from models.errors import BatchError, ConfigError, MeWMError
from pipelines.manifest import ManifestRecord, load_manifest_case, read_manifest
from pipelines.progress import ProgressFn, resolve_progress

__all__ = ["BACKENDS", "DEFAULT_LOADER", "RESULT_KEYS", "BatchReport", "ScoringModels", "ScoringWorker",
           "batch_settings", "case_file_name", "default_out_dir", "load_scoring_models", "machine_info",
           "read_case_records", "results_table", "score_case", "score_manifest", "stage_uploaded_manifest"]

BACKENDS = ("process", "ray")
# The function that loads a worker's models, as an import path (importable in every worker process).
DEFAULT_LOADER = "pipelines.planning.batch:load_scoring_models"
# Settings that decide the results: a rerun into the same folder must use the same values.
RESULT_KEYS = ("manifest", "mode", "samples", "steps", "sampler", "guidance", "seed", "beams", "drug_horizon",
               "embolic_horizon", "candidates", "weights_dir", "survival_dir", "policy", "loader")
NOTICE = "Research use only; not for clinical use. Risks come from models trained on synthetic data."


# ------------------------------------------------------------------------------------------------------ settings
def batch_settings(settings: dict[str, Any] | None = None, *, manifest: str | os.PathLike | None = None,
                   config: Any = None, loader: str | None = None) -> dict[str, Any]:
    """The complete, checked settings of a batch: ``settings`` over the configured defaults.

    Defaults come from ``[planning]`` (mode, samples, steps, guidance, seed, beams, horizons, survival_dir),
    ``[worldmodel]`` (weights_dir, sampler) and ``[policy]``. ``candidates`` (plan texts) replaces the policy: every
    case is searched exhaustively over exactly these plans. Folders become absolute paths.

    Raises:
        ConfigError: an unknown key, or a value out of range. PlanValidationError: a candidate plan breaks a rule.
    """
    import dataclasses

    from pipelines.config import resolve_config
    from pipelines.planning.search import MODES
    from pipelines.worldmodel.weights import SAMPLERS

    cfg = resolve_config(config)
    planning = cfg.planning
    out: dict[str, Any] = {
        "manifest": None, "mode": planning.mode, "samples": planning.samples, "steps": planning.steps,
        "sampler": cfg.worldmodel.sampler, "guidance": planning.guidance, "seed": planning.seed,
        "beams": planning.beams,
        "drug_horizon": planning.drug_horizon, "embolic_horizon": planning.embolic_horizon, "candidates": None,
        "weights_dir": cfg.worldmodel.weights_dir, "survival_dir": planning.survival_dir,
        "policy": dataclasses.asdict(cfg.policy), "loader": loader or DEFAULT_LOADER}
    unknown = sorted(set(settings or {}) - set(out))
    if unknown:
        raise ConfigError(f"Unknown batch setting(s) {', '.join(unknown)}; known: {', '.join(out)}.")
    out.update({k: v for k, v in (settings or {}).items() if v is not None})
    if manifest is not None:
        out["manifest"] = manifest
    if out["mode"] not in MODES:
        raise ConfigError(f"Unknown search mode {out['mode']!r}; choose one of {', '.join(MODES)}.")
    if out["sampler"] not in SAMPLERS:
        raise ConfigError(f"Unknown sampler {out['sampler']!r}; choose one of {', '.join(SAMPLERS)}.")
    for key in ("samples", "steps", "beams", "embolic_horizon"):
        if int(out[key]) < 1:
            raise ConfigError(f"Batch setting {key} must be >= 1, got {out[key]}.")
        out[key] = int(out[key])
    out["seed"], out["drug_horizon"], out["guidance"] = int(out["seed"]), int(out["drug_horizon"]), \
        float(out["guidance"])
    if out["candidates"] is not None:
        from pipelines.worldmodel.simulate import parse_plans

        texts = [out["candidates"]] if isinstance(out["candidates"], str) else list(out["candidates"])
        out["candidates"] = [plan.canonical() for plan in parse_plans(texts)]  # PlanValidationError names the plan
    for key in ("manifest", "weights_dir", "survival_dir"):
        if out[key] is not None:
            out[key] = str(Path(out[key]).expanduser().resolve())
    if out["manifest"] is not None and Path(out["manifest"]).is_dir():
        out["manifest"] = str(Path(out["manifest"]) / "manifest.csv")
    return out


# ------------------------------------------------------------------------------------------------------- workers
@dataclass
class ScoringModels:
    """What one worker scores with: a `WorldModel`, a `SurvivalModel`, and a policy (``None`` with candidates)."""

    world: Any
    survival: Any
    policy: Any = None


def load_scoring_models(settings: dict[str, Any]) -> ScoringModels:
    """The default loader: `load_world_model(weights_dir, sampler=sampler)`, `load_survival_model(survival_dir)`
    and, unless
    ``candidates`` are given, `load_policy` with the recorded ``[policy]`` settings.

    Raises:
        CheckpointNotFoundError: a missing or incompatible checkpoint (the message names the command that makes it).
    """
    from pipelines.worldmodel.weights import load_world_model

    try:
        from pipelines.survival.model import load_survival_model
    except ImportError as e:  # the survival package is built alongside; say so instead of a traceback
        raise ConfigError(f"The survival models (pipelines.survival.model) are not available in this "
                          f"installation: {e}.") from e
    world = load_world_model(settings["weights_dir"], sampler=settings.get("sampler"))
    survival = load_survival_model(settings["survival_dir"])
    policy = None
    if settings.get("candidates") is None:
        from pipelines.config import PolicyConfig
        from pipelines.policy import load_policy

        policy = load_policy(PolicyConfig(**settings["policy"]))
    return ScoringModels(world=world, survival=survival, policy=policy)


def _import(path: str) -> Callable[[dict[str, Any]], ScoringModels]:
    module, _, name = path.partition(":")
    if not module or not name:
        raise ConfigError(f"A model loader is given as 'module:function', got {path!r}.")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"Cannot import the model loader {path!r}: {e}") from e


class ScoringWorker:
    """One worker's models, loaded once, and the per-case function. Used in-process, as the state of a pool
    process, and as a Ray actor (`pipelines.planning.batch_ray`).

    A loading error is kept (``setup_error``) instead of raised, so a pool process or an actor can report it as
    data; `score` then answers ``{"status": "setup_failed", ...}`` and the driver stops the batch.
    """

    def __init__(self, settings: dict[str, Any], loader: str = DEFAULT_LOADER, threads: int | None = None,
                 sys_path: Sequence[str] = ()) -> None:
        for entry in reversed(list(sys_path)):  # a Ray worker sees the driver's modules (tests, plug-in loaders)
            if entry not in sys.path:
                sys.path.insert(0, entry)
        self.settings = settings
        self.models: ScoringModels | None = None
        self.setup_error: Exception | None = None
        self.setup_seconds = 0.0
        t0 = time.perf_counter()
        try:
            if threads is not None:
                import torch

                torch.set_num_threads(int(threads))
            self.models = _import(loader)(settings)
        except Exception as e:  # noqa: BLE001 - reported to the driver, which stops the batch with it
            self.setup_error = e
        self.setup_seconds = time.perf_counter() - t0

    def score(self, record: ManifestRecord) -> dict[str, Any]:
        if self.setup_error is not None:
            return {"case_id": record.case_id, "status": "setup_failed",
                    "error_type": type(self.setup_error).__name__, "message": str(self.setup_error)}
        return score_case(record, self.models, self.settings)


def score_case(record: ManifestRecord, models: ScoringModels, settings: dict[str, Any]) -> dict[str, Any]:
    """Load and plan one manifest row; the per-case record (``status`` ``"ok"`` or ``"failed"``), never raises.

    This is the batch's error boundary: any exception of this case becomes a failure record (type, message, and
    for an unexpected, non-`MeWMError` exception its traceback) so the rest of the batch goes on.
    """
    from pipelines.planning.search import plan_case

    t0 = time.perf_counter()
    worker = {"pid": os.getpid(), "node": platform.node()}
    try:
        case = load_manifest_case(record)
        result = plan_case(case, models.world, models.survival, mode=settings["mode"], samples=settings["samples"],
                           seed=settings["seed"], steps=settings["steps"], guidance=settings["guidance"],
                           beams=settings["beams"], drug_horizon=settings["drug_horizon"],
                           embolic_horizon=settings["embolic_horizon"], candidates=settings["candidates"],
                           policy=models.policy)
        return {"case_id": record.case_id, "status": "ok", "seconds": time.perf_counter() - t0, "worker": worker,
                "result": result.to_dict()}
    except Exception as e:  # noqa: BLE001 - one bad case must not stop the batch; it is recorded with its reason
        failure = {"case_id": record.case_id, "status": "failed", "seconds": time.perf_counter() - t0,
                   "worker": worker, "error_type": type(e).__name__, "message": str(e),
                   "expected": isinstance(e, MeWMError)}
        if not isinstance(e, MeWMError):
            failure["traceback"] = traceback.format_exc()
        return failure


# --------------------------------------------------------------------------------------------- process backend
_POOL_WORKER: ScoringWorker | None = None


def _pool_init(settings: dict[str, Any], loader: str, threads: int | None) -> None:
    global _POOL_WORKER
    _POOL_WORKER = ScoringWorker(settings, loader, threads)


def _pool_score(record: ManifestRecord) -> dict[str, Any]:
    assert _POOL_WORKER is not None, "pool process was not initialised"
    return _POOL_WORKER.score(record)


def _run_in_process(records: Sequence[ManifestRecord], settings: dict[str, Any], loader: str,
                    threads: int | None) -> Iterator[dict[str, Any]]:
    """One worker in this process (no pool): a loading error is raised as its own typed error."""
    previous = None
    if threads is not None:
        import torch

        previous = torch.get_num_threads()
    worker = ScoringWorker(settings, loader, threads)
    try:
        if worker.setup_error is not None:
            raise worker.setup_error
        for record in records:
            yield worker.score(record)
    finally:
        if previous is not None:
            import torch

            torch.set_num_threads(previous)


def _run_pool(records: Sequence[ManifestRecord], settings: dict[str, Any], loader: str, workers: int,
              threads: int | None) -> Iterator[dict[str, Any]]:
    """A spawn-context process pool; results in completion order. At most ``workers`` cases are in flight, so a
    kill loses at most those."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    pending = list(reversed(records))
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_pool_init, initargs=(settings, loader, threads)) as pool:
        running = set()
        try:
            while pending or running:
                while pending and len(running) < workers:
                    running.add(pool.submit(_pool_score, pending.pop()))
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        except BrokenProcessPool as e:
            raise BatchError("A scoring worker process died (out of memory, or killed). Every case finished so "
                             "far is saved; run the same command again to score the rest.") from e
        finally:
            for future in running:
                future.cancel()


# ---------------------------------------------------------------------------------------------- output folder
def case_file_name(case_id: str) -> str:
    """``<case_id>.json`` with characters unsafe in a file name percent-encoded (one-to-one, never a path)."""
    name = quote(case_id, safe="-_.")
    if name.startswith("."):
        name = "%2E" + name[1:]
    return f"{name}.json"


def _write_json(data: dict[str, Any], path: Path) -> None:
    """Strict JSON, written whole to a temporary file beside ``path`` and renamed onto it (atomic)."""
    from pipelines.worldmodel.metrics import json_safe

    text = json.dumps(json_safe(data), indent=1, sort_keys=True, allow_nan=False) + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """An exclusive lock on the output folder for this run (released by the OS even after ``kill -9``)."""
    with (out / ".lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise BatchError(f"Another `mewm score` is writing to {out}; wait for it to finish or choose another "
                             "--out.") from e
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_OUTPUTS = ("cases", "failed", "results.csv", "results.parquet", "batch.json", "settings.json")


def _prepare_folder(out: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """Check (or record) the settings of the batch in ``out``; remove stale temporary files."""
    recorded = _read_json(out / "settings.json")
    if recorded is not None and overwrite:
        for name in _OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        recorded = None
    if recorded is None:
        others = [p.name for p in out.iterdir() if p.name != ".lock" and p.name not in _OUTPUTS]
        if others:
            raise BatchError(f"{out} is not empty ({', '.join(sorted(others)[:5])}) and holds no batch "
                             "(settings.json); choose a new or empty --out folder.")
        (out / "cases").mkdir(exist_ok=True)
        (out / "failed").mkdir(exist_ok=True)
        _write_json({k: settings[k] for k in RESULT_KEYS}, out / "settings.json")
        return
    differ = [k for k in RESULT_KEYS if recorded.get(k) != json.loads(json.dumps(settings[k]))]
    if differ:
        shown = "; ".join(f"{k}: {recorded.get(k)!r} then, {settings[k]!r} now" for k in differ)
        raise BatchError(f"{out} holds a batch scored with other settings ({shown}). Rerun with the same settings "
                         "to finish it, choose another --out, or pass --overwrite to discard it.")
    for folder in (out / "cases", out / "failed"):
        folder.mkdir(exist_ok=True)
        for tmp in folder.glob(".*.tmp"):  # a write interrupted by a kill: never a record
            tmp.unlink(missing_ok=True)


def read_case_records(out: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Every per-case record in ``out`` by case id; a scored case wins over an older failure of the same case."""
    out = Path(out)
    records: dict[str, dict[str, Any]] = {}
    for folder in ("failed", "cases"):  # cases last: a success overrides a failure
        for path in sorted((out / folder).glob("*.json")):
            data = _read_json(path)
            if data is not None and "case_id" in data:
                records[data["case_id"]] = data
    return records


def default_out_dir(root: str | os.PathLike, settings: dict[str, Any]) -> Path:
    """``root/batch-<digest>``: one folder per manifest and result-defining settings, so running the same batch
    again (e.g. from the app after a restart) resumes it instead of starting over."""
    import hashlib

    key = json.dumps({k: settings.get(k) for k in RESULT_KEYS}, sort_keys=True, default=str)
    return Path(root).expanduser() / f"batch-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def stage_uploaded_manifest(manifest_csv: bytes, files_zip: bytes | None, root: str | os.PathLike) -> Path:
    """Put an uploaded manifest (and a zip of the files it names, paths relative to the manifest) in a folder of
    its own under ``root`` (named by the uploads' digest, so the same upload lands in the same folder); return the
    checked manifest path.

    Raises:
        UnsafeArchiveError / UnreadableFileError: the zip is unsafe or corrupt. ManifestError: the manifest is
        malformed or names files that are not in the zip (or on this server).
    """
    import hashlib

    from pipelines.caseio.archive import extract_zip

    digest = hashlib.sha256(manifest_csv + b"\0" + (files_zip or b"")).hexdigest()[:16]
    folder = Path(root).expanduser() / f"upload-{digest}"
    if not (folder / "manifest.csv").is_file():
        staging = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        if files_zip:
            archive = staging.with_suffix(".zip")
            archive.parent.mkdir(parents=True, exist_ok=True)
            archive.write_bytes(files_zip)
            try:
                extract_zip(archive, staging)
            finally:
                archive.unlink(missing_ok=True)
        staging.mkdir(parents=True, exist_ok=True)
        (staging / "manifest.csv").write_bytes(manifest_csv)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    read_manifest(folder / "manifest.csv")  # ManifestError names the row and the missing file
    return folder / "manifest.csv"


# ------------------------------------------------------------------------------------------------------ results
_PLAN_COLUMNS = ("plan", "protocol", "risk_mean", "risk_sd", "median_months", "rmst_months")


def _result_row(record: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"case_id": record["case_id"], "status": record["status"]}
    ranked = (record.get("result") or {}).get("ranked") or []
    for i, prefix in enumerate(("best", "plan_2", "plan_3")):
        plan = ranked[i] if i < len(ranked) else {}
        for column in _PLAN_COLUMNS:
            value = plan.get(column)
            row[f"{prefix}_{column}"] = math.nan if value is None and column not in ("plan", "protocol") else value
    result = record.get("result") or {}
    row["n_plans"] = len(ranked)
    row["denoiser_passes"] = result.get("denoiser_passes")
    row["proposal_backend"] = (result.get("proposal") or {}).get("backend")
    row["seconds"] = record.get("seconds")
    row["error_type"] = record.get("error_type")
    row["error"] = record.get("message")
    return row


def results_table(records: Iterable[dict[str, Any]], order: Sequence[str] = ()):
    """One row per case record (`pandas.DataFrame`), in ``order`` (manifest order) then by case id."""
    import pandas as pd

    position = {case_id: i for i, case_id in enumerate(order)}
    rows = sorted((_result_row(r) for r in records),
                  key=lambda r: (position.get(r["case_id"], len(position)), r["case_id"]))
    columns = ["case_id", "status"] + [f"{p}_{c}" for p in ("best", "plan_2", "plan_3") for c in _PLAN_COLUMNS] + \
        ["n_plans", "denoiser_passes", "proposal_backend", "seconds", "error_type", "error"]
    return pd.DataFrame(rows, columns=columns)


def _write_table(table, out: Path) -> None:
    """``results.csv`` and ``results.parquet``, each written whole and renamed (atomic)."""
    csv_tmp, pq_tmp = out / f".results.csv.{os.getpid()}.tmp", out / f".results.parquet.{os.getpid()}.tmp"
    table.to_csv(csv_tmp, index=False)
    os.replace(csv_tmp, out / "results.csv")
    table.to_parquet(pq_tmp, index=False)
    os.replace(pq_tmp, out / "results.parquet")


# ------------------------------------------------------------------------------------------------------- report
@dataclass(eq=False)
class BatchReport:
    """What `score_manifest` did. Counts are over the cases of this run (the manifest, up to ``limit``).

    Attributes:
        ok, failed: cases with a scored / failure record after this run; pending: cases with neither (none
        unless the run stopped early); scored: cases planned in this run (the others were resumed from disk);
        seconds: wall time of this run; case_seconds: the per-case times of the cases planned in this run.
    """

    out: Path
    total: int
    ok: int
    failed: int
    pending: int
    scored: int
    skipped: int
    seconds: float
    case_seconds: list[float]
    settings: dict[str, Any]
    run: dict[str, Any]
    results: Any = field(repr=False)

    @property
    def cases_per_hour(self) -> float:
        """Cases planned per hour of wall time in this run (worker start-up included); nan if none."""
        return 3600.0 * self.scored / self.seconds if self.scored and self.seconds > 0 else math.nan

    def failures(self) -> list[dict[str, Any]]:
        """``[{case_id, error_type, error}]`` of the failed cases."""
        failed = self.results[self.results["status"] == "failed"]
        return failed[["case_id", "error_type", "error"]].to_dict("records")

    def to_dict(self) -> dict[str, Any]:
        mean = sum(self.case_seconds) / len(self.case_seconds) if self.case_seconds else None
        return {"settings": self.settings, "run": self.run,
                "counts": {"cases": self.total, "ok": self.ok, "failed": self.failed, "pending": self.pending,
                           "scored_this_run": self.scored, "skipped_already_done": self.skipped},
                "timing": {"seconds": self.seconds, "cases_per_hour": self.cases_per_hour,
                           "mean_case_seconds": mean, "case_seconds": self.case_seconds},
                "machine": machine_info(), "notice": NOTICE}

    def summary(self) -> str:
        lines = [f"{self.total} cases: {self.ok} scored, {self.failed} failed, {self.pending} pending "
                 f"({self.scored} planned in this run, {self.skipped} already done).",
                 f"{self.seconds:.1f} s with {self.run['workers']} {self.run['backend']} worker(s)"
                 + (f": {self.cases_per_hour:.0f} cases/hour." if self.scored else ".")]
        for f in self.failures():
            lines.append(f"  failed {f['case_id']}: {f['error_type']}: {f['error']}")
        lines += [f"Results: {self.out / 'results.csv'} (and results.parquet, cases/, failed/, batch.json).", NOTICE]
        return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    """Where a batch ran (for timings): platform, Python, CPU count, torch version and threads."""
    import torch

    return {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "torch_threads_driver": torch.get_num_threads(),
            "load_average_1_5_15m": list(os.getloadavg())}  # other work on the machine skews timings


# ----------------------------------------------------------------------------------------------------- the recipe
def score_manifest(manifest: str | os.PathLike, out: str | os.PathLike, *, workers: int = 1,
                   backend: str = "process", settings: dict[str, Any] | None = None,
                   progress: bool | ProgressFn | None = None, limit: int | None = None, retry_failed: bool = False,
                   overwrite: bool = False, ray_address: str | None = None, loader: str | None = None,
                   config: Any = None) -> BatchReport:
    """Plan every case of ``manifest`` into ``out`` (layout in the module doc); resumable.

    1. check the settings, the manifest and the output folder (a folder scored with other settings is refused
       unless ``overwrite``); 2. skip the cases already scored (and, unless ``retry_failed``, already failed);
    3. plan the rest with ``workers`` workers (``backend`` ``"process"``: this process for one worker, else a spawn
    process pool; ``"ray"``: Ray actors on a local Ray, or the cluster at ``ray_address``), writing each case's
    record as it arrives; 4. rebuild ``results.csv``/``.parquet`` and write ``batch.json``.

    Args:
        settings: batch settings over the configured defaults (`batch_settings`).
        limit: only the first ``limit`` rows of the manifest. loader: ``"module:function"`` returning
            `ScoringModels` for the settings (default `DEFAULT_LOADER`).

    Raises:
        ManifestError: no or malformed manifest. BatchError: settings differ from the folder's batch, another run
        holds the folder, a worker could not load the models or died. ConfigError: bad settings.
    """
    start = time.perf_counter()
    if backend not in BACKENDS:
        raise ConfigError(f"Unknown batch backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    if int(workers) < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}.")
    if limit is not None and int(limit) < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}.")
    workers = int(workers)
    settings = batch_settings(settings, manifest=manifest, config=config, loader=loader)
    # Files are checked per case (a missing file fails its case, not the batch); the table keeps manifest order.
    everything = read_manifest(settings["manifest"], check_files=False)
    records = everything[:int(limit)] if limit is not None else everything
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    threads = 1 if workers > 1 else None
    run = {"workers": workers, "backend": backend, "limit": limit, "retry_failed": retry_failed,
           "ray_address": ray_address,  # a Ray actor holds one CPU, so it runs one thread
           "torch_threads_per_worker": threads or (1 if backend == "ray" else "default")}
    with _locked(out):
        _prepare_folder(out, settings, overwrite)
        wanted = {r.case_id for r in records}
        done = {k: v for k, v in read_case_records(out).items() if k in wanted}
        todo = [r for r in records if r.case_id not in done
                or (retry_failed and done[r.case_id]["status"] == "failed")]
        skipped = len(records) - len(todo)
        bar = resolve_progress(progress, "score", "case")
        if bar is not None:
            bar(skipped, len(records), "resuming" if skipped else "starting")
        case_seconds: list[float] = []
        if todo:
            if backend == "ray":
                from pipelines.planning.batch_ray import run_ray

                results = run_ray(todo, settings, settings["loader"], workers, threads, ray_address)
            elif workers == 1:
                results = _run_in_process(todo, settings, settings["loader"], threads)
            else:
                results = _run_pool(todo, settings, settings["loader"], min(workers, len(todo)), threads)
            with contextlib.closing(results):  # a stop (error, Ctrl-C) shuts the pool or the actors down
                for n, record in enumerate(results, start=skipped + 1):
                    _store(out, record)
                    case_seconds.append(float(record.get("seconds") or 0.0))
                    if bar is not None:
                        bar(n, len(records), f"{record['case_id']} {record['status']}")
        final = read_case_records(out)
        table = results_table(final.values(), order=[r.case_id for r in everything])
        _write_table(table, out)
        ours = [final[r.case_id] for r in records if r.case_id in final]
        report = BatchReport(out=out, total=len(records), ok=sum(r["status"] == "ok" for r in ours),
                             failed=sum(r["status"] == "failed" for r in ours), pending=len(records) - len(ours),
                             scored=len(case_seconds), skipped=skipped, seconds=time.perf_counter() - start,
                             case_seconds=case_seconds, settings=settings, run=run, results=table)
        _write_json(report.to_dict(), out / "batch.json")
    return report


def _store(out: Path, record: dict[str, Any]) -> None:
    """Write one case's record where it belongs (the resume record), or stop the batch on a setup failure."""
    if record["status"] == "setup_failed":
        raise BatchError(f"A worker could not load the scoring models: {record['error_type']}: {record['message']}")
    name = case_file_name(record["case_id"])
    if record["status"] == "ok":
        _write_json(record, out / "cases" / name)
        (out / "failed" / name).unlink(missing_ok=True)  # a retried case that now succeeds
    else:
        _write_json(record, out / "failed" / name)
