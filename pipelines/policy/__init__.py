"""Policy backends: who proposes candidate TACE agents for a case (``guideline``, ``openai``, ``hf``).

Contract: ``docs/planning_design.md`` §Policy. Import the backends lazily (`load_policy`): ``openai`` needs httpx,
``hf`` needs torch and transformers.
"""

from pipelines.policy.base import BACKENDS, PolicyBackend, Proposal, load_policy

__all__ = ["BACKENDS", "PolicyBackend", "Proposal", "load_policy"]
