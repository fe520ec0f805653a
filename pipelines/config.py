"""One configuration: dataclass defaults, overridden by a TOML file, then by environment variables, then CLI flags.

File: ``--config PATH`` or ``$MEWM_CONFIG`` (TOML). Sections mirror the dataclasses below, e.g.::

    [io]
    max_voxels = 200_000_000
    [app]
    database_url = "sqlite:///~/.mewm/mewm.db"
    [worldmodel]
    weights_dir = "~/mewm-weights"

Environment overrides: ``MEWM_<SECTION>__<KEY>`` (e.g. ``MEWM_IO__MAX_VOXELS=1000000``).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.errors import ConfigError

__all__ = ["DEFAULT_SAMPLER", "DEFAULT_STEPS", "IOConfig", "AppConfig", "WorldModelConfig", "PolicyConfig",
           "PlanningConfig", "ReasoningConfig",
           "StudyConfig", "Config", "load_config", "resolve_config", "REPO_ROOT",
           "SAMPLE_DATA_DIR"]

REPO_ROOT = Path(__file__).resolve().parent.parent
# The world model's default sampler and its number of denoising steps (every command, page and search uses these
# unless told otherwise; the dynamics card's "Sampler" section measured the pair)
DEFAULT_SAMPLER = "dpm_solver"
DEFAULT_STEPS = 15
SAMPLE_DATA_DIR = REPO_ROOT / "sample_data"


@dataclass
class IOConfig:
    """Limits and tolerances of case loading."""

    max_voxels: int = 256 * 1024 * 1024  # refuse volumes larger than this (e.g. 512x512x1000 = 262M is refused)
    max_file_bytes: int = 2 * 1024**3  # refuse single files / archives larger than this
    max_zip_ratio: float = 200.0  # refuse archives that expand more than this many times their size
    max_zip_members: int = 5000
    spacing_tol_mm: float = 1e-3  # absolute tolerance on spacing when comparing grids
    origin_tol_mm: float = 1e-2  # absolute tolerance on origin
    direction_tol: float = 1e-4  # absolute tolerance on direction cosines
    min_slices: int = 8  # fewer slices than this is "not a volume"
    reorient_to_ras: bool = True
    hu_min_plausible: float = -1100.0  # a CT whose voxels all fall outside [hu_min, hu_max] is not in HU
    hu_max_plausible: float = 4000.0


@dataclass
class AppConfig:
    """The Streamlit app and its database."""

    data_dir: str = "~/.mewm"
    database_url: str = ""  # empty: sqlite file in data_dir
    sample_data_dir: str = str(SAMPLE_DATA_DIR)


@dataclass
class WorldModelConfig:
    """The world model (autoencoder, dynamics, segmentation checkpoints) used by `mewm simulate` and the app."""

    weights_dir: str = str(REPO_ROOT / "models" / "weights")  # holds autoencoder/, dynamics/, segmentation/
    # lesions larger than the training crop are simulated in a larger crop (same voxel size) up to this side, in
    # voxels; set it to the training crop size (48) to refuse them instead
    max_crop_voxels: int = 96
    # the dtype the networks compute in while sampling: "float32" (same figures on any machine) or "bfloat16"
    # (several times faster on CPUs with AMX / AVX512-BF16, slightly different samples; see the dynamics card)
    precision: str = "float32"
    # guidance scale of the dynamics model's response token alone (a third denoiser branch: the plan without its
    # token; `pipelines.worldmodel.simulate.combine_guidance`); equal to the sampling guidance = the plain two-branch
    # classifier-free guidance; ignored by a model without the token. 4 orders plans better than 2 on the held-out
    # cohort at 1.45x the sampling time (dynamics card, docs/worldmodel_design.md "Guiding the response token")
    response_guidance: float = 4.0
    # the dynamics model's sampler: "ddim" (MONAI DDIMScheduler, eta 0) or "dpm_solver" (diffusers' DPM-Solver++,
    # second-order multistep: the same samples in fewer steps; dynamics card "Sampler")
    sampler: str = DEFAULT_SAMPLER


@dataclass
class PolicyConfig:
    """Who proposes candidate plans (`pipelines.policy`): ``guideline`` (offline rules), ``openai``, ``hf``."""

    backend: str = "guideline"
    openai_base_url: str = "http://127.0.0.1:8000/v1"  # any OpenAI-compatible server (vLLM, Ollama, OpenAI)
    openai_model: str = "gpt-4o"
    openai_api_key_env: str = "OPENAI_API_KEY"  # name of the environment variable holding the key (never the key)
    hf_model_dir: str = ""  # a local Hugging Face vision-language checkpoint directory
    device: str = "cpu"
    max_retries: int = 3  # bounded retries of an invalid or refused reply
    timeout_s: float = 60.0
    temperature: float = 0.2


@dataclass
class PlanningConfig:
    """Survival model and plan search (`pipelines.planning`)."""

    survival_dir: str = str(REPO_ROOT / "models" / "weights" / "survival_cox")  # the inverse-dynamics model
    mode: str = "beam"  # "beam" (reference search) or "exhaustive"
    samples: int = 3  # T samples per candidate plan
    steps: int = DEFAULT_STEPS  # denoising steps of the world model's sampler
    guidance: float = 2.0
    beams: int = 5
    drug_horizon: int = 2
    embolic_horizon: int = 2
    seed: int = 0


@dataclass
class ReasoningConfig:
    """Reasoning chat (`pipelines.reasoning`): the policy LM and the process reward model."""

    backend: str = "smollm2"  # "smollm2" (embedded GGUF), "hf" (a local causal-LM directory), "openai"
    hf_model_dir: str = ""
    prm_dir: str = str(REPO_ROOT / "models" / "weights" / "prm")
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_model: str = ""
    openai_api_key_env: str = "OPENAI_API_KEY"
    device: str = "cpu"
    n: int = 8
    aggregation: str = "min"
    max_new_tokens: int = 256
    temperature: float = 0.8
    timeout_s: float = 120.0


@dataclass
class StudyConfig:
    """Visual Turing-test reader studies (`pipelines.turing`)."""

    admin_passcode: str = ""  # empty: the admin view is locked until a passcode is configured
    studies_dir: str = "~/.mewm/studies"  # rendered, opaque study items


@dataclass
class Config:
    io: IOConfig = field(default_factory=IOConfig)
    app: AppConfig = field(default_factory=AppConfig)
    worldmodel: WorldModelConfig = field(default_factory=WorldModelConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    planning: PlanningConfig = field(default_factory=PlanningConfig)
    reasoning: ReasoningConfig = field(default_factory=ReasoningConfig)
    study: StudyConfig = field(default_factory=StudyConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(value: Any, target: Any, where: str) -> Any:
    kind = type(target)
    try:
        if kind is bool and isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: expected a {kind.__name__}, got {value!r}.") from e


def _apply(cfg: Config, section: str, key: str, value: Any, where: str) -> None:
    sec = getattr(cfg, section, None)
    if sec is None or not dataclasses.is_dataclass(sec):
        known = ", ".join(f.name for f in dataclasses.fields(cfg))
        raise ConfigError(f"{where}: unknown section [{section}]; known sections: {known}.")
    names = {f.name for f in dataclasses.fields(sec)}
    if key not in names:
        raise ConfigError(f"{where}: unknown key {key!r} in [{section}]; known keys: {', '.join(sorted(names))}.")
    setattr(sec, key, _coerce(value, getattr(sec, key), where))


def load_config(path: str | os.PathLike | None = None, env: dict[str, str] | None = None,
                overrides: dict[str, Any] | None = None) -> Config:
    """Defaults ← TOML file (``path`` or ``$MEWM_CONFIG``) ← ``MEWM_SECTION__KEY`` env ← ``overrides``.

    ``overrides`` maps ``"section.key"`` to a value (what CLI flags set).
    """
    env = dict(os.environ if env is None else env)
    cfg = Config()
    path = path or env.get("MEWM_CONFIG")
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError(f"Config file {p} does not exist.")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"Config file {p} is not valid TOML: {e}") from e
        for section, items in data.items():
            if not isinstance(items, dict):
                raise ConfigError(f"{p}: top-level key {section!r} must be a [section].")
            for key, value in items.items():
                _apply(cfg, section, key, value, f"{p} [{section}] {key}")
    for name, value in env.items():
        if name.startswith("MEWM_") and "__" in name:
            section, key = name[5:].split("__", 1)
            _apply(cfg, section.lower(), key.lower(), value, f"environment {name}")
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".", 1)
        _apply(cfg, section, key, value, f"option {dotted}")
    return cfg


def resolve_config(config: "Config | str | os.PathLike | None" = None) -> Config:
    """A `Config` as given, or loaded from a TOML path, or (``None``) from the defaults, ``$MEWM_CONFIG`` and env.

    Library functions take ``config=None`` and call this once, so the CLI can pass its ``--config`` path through.
    """
    if isinstance(config, Config):
        return config
    if config is None or isinstance(config, (str, os.PathLike)):
        return load_config(config)
    raise ConfigError(f"config must be a Config, a TOML path or None, got {type(config).__name__}.")
