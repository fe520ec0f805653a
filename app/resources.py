"""Cached loaders wrapping `pipelines` calls. The only place the app caches anything.

Caching choices:
- the sample list is small plain data: ``st.cache_data`` (each caller gets its own copy);
- sample cases hold large numpy arrays: ``st.cache_resource`` shares one object across sessions without
  pickling or copying it on every rerun. Its arrays are made read-only, so no session can change what another
  sees; callers must treat the returned `Case` as immutable;
- the world model (three networks) is ``st.cache_resource``: loaded once per weights folder, shared read-only
  (eval mode, no gradients; `WorldModel.simulate` never changes it);
- uploaded cases are never cached across sessions (they belong to one user): the page keeps them in its own
  session state.
"""

from __future__ import annotations

import streamlit as st

from pipelines.case import Case

__all__ = ["sample_data_dir", "sample_cases", "sample_case", "uploaded_case", "summarise", "freeze",
           "world_model_dir", "world_model", "suggested_plans", "planning_config", "survival_model", "policy",
           "reasoning_backend", "reasoning_prm"]


def sample_data_dir() -> str:
    """The sample-case folder from the configuration (``MEWM_APP__SAMPLE_DATA_DIR`` overrides it)."""
    from pipelines.config import load_config

    return load_config().app.sample_data_dir


def freeze(case: Case) -> Case:
    """Make every voxel array of ``case`` read-only (in place) and return it."""
    for volume in (case.ct, case.labels, case.post_ct, case.post_labels):
        if volume is not None:
            volume.array.flags.writeable = False
    return case


@st.cache_data(show_spinner=False, ttl=300)
def sample_cases(root: str) -> list:
    """`pipelines.samples.list_sample_cases` for ``root`` (a list of `SampleCaseInfo`)."""
    from pipelines.samples import list_sample_cases

    return list_sample_cases(root)


@st.cache_resource(show_spinner="Opening the sample case…", max_entries=4)
def sample_case(case_id: str, root: str) -> Case:
    """One sample case, shared read-only across sessions."""
    from pipelines.samples import load_sample_case

    return freeze(load_sample_case(case_id, root))


def uploaded_case(image: tuple[str, bytes], labels: tuple[str, bytes] | None, series: str | None) -> Case:
    """`pipelines.caseio.load_uploaded_case` (not cached: an upload belongs to one session)."""
    from pipelines.caseio import load_uploaded_case

    return freeze(load_uploaded_case(image, labels, series=series))


def summarise(case: Case) -> dict:
    """`pipelines.caseio.case_summary(case).to_dict()`."""
    from pipelines.caseio import case_summary

    return case_summary(case).to_dict()


def world_model_dir() -> str:
    """The world-model weights folder from the configuration (``MEWM_WORLDMODEL__WEIGHTS_DIR`` overrides it)."""
    from pipelines.config import load_config

    return load_config().worldmodel.weights_dir


@st.cache_resource(show_spinner="Loading the world model…", max_entries=2)
def world_model(weights_dir: str):
    """`pipelines.worldmodel.weights.load_world_model` for ``weights_dir``, shared across sessions.

    A missing or incompatible checkpoint raises `CheckpointNotFoundError` (not cached, so installing the weights
    and rerunning works without a restart).
    """
    from pipelines.worldmodel.weights import load_world_model

    return load_world_model(weights_dir)


@st.cache_data(show_spinner=False)
def suggested_plans() -> list[str]:
    """Canonical texts of the virtual cohort's practice catalogue (`pipelines.cohort.plan_space`)."""
    from pipelines.cohort.plan_space import cohort_plan_space

    return [plan.canonical() for plan in cohort_plan_space()]


def planning_config():
    """The `Config` (policy and planning sections) from the file and environment, fresh on every call."""
    from pipelines.config import load_config

    return load_config()


@st.cache_resource(show_spinner="Loading the survival model…", max_entries=2)
def survival_model(directory: str):
    """`pipelines.survival.model.load_survival_model` for ``directory``, shared read-only across sessions."""
    from pipelines.survival.model import load_survival_model

    return load_survival_model(directory)


@st.cache_resource(show_spinner="Loading the policy…", max_entries=2)
def policy(backend: str, _config):
    """The configured policy backend (`pipelines.policy.load_policy`), one per backend name, shared."""
    from pipelines.policy import load_policy

    return load_policy(_config)


@st.cache_resource(show_spinner="Loading the reasoning model…", max_entries=2)
def reasoning_backend(backend: str, model_dir: str, base_url: str, model: str, timeout_s: float):
    """The reasoning chat's policy LM (`pipelines.reasoning.backends.load_backend`), shared across sessions.

    The arguments are the ``[reasoning]`` settings that identify it (the cache key). A missing model or a bad setting
    raises a typed error (not cached, so fixing the configuration and rerunning works without a restart). The
    embedded llama.cpp backend serialises its own requests, so sharing it is safe.
    """
    from pipelines.config import load_config
    from pipelines.reasoning.backends import load_backend

    overrides = {"reasoning.backend": backend, "reasoning.hf_model_dir": model_dir,
                 "reasoning.openai_base_url": base_url, "reasoning.openai_model": model,
                 "reasoning.timeout_s": timeout_s}
    return load_backend(load_config(overrides=overrides))


@st.cache_resource(show_spinner="Loading the process reward model…", max_entries=2)
def reasoning_prm(prm_dir: str):
    """The process reward model in ``prm_dir`` (`pipelines.reasoning.prm.load_prm`), eval mode, shared."""
    from pipelines.reasoning.prm import load_prm

    return load_prm(prm_dir)
