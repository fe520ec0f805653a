"""The one exception hierarchy of MeWM Workbench.

Every error a user can cause (a bad file, an invalid plan, a missing checkpoint) is a subclass of `MeWMError`,
so the UI and the CLI can catch it and show its message in plain words. Messages say what was wrong, the values
seen, and what to do. Most subclass `ValueError` because callers treat them as bad input.
"""

from __future__ import annotations

__all__ = [
    "MeWMError",
    "ConfigError",
    "DeviceUnavailableError",
    "CaseIOError",
    "UnreadableFileError",
    "UnsupportedFormatError",
    "NotCTError",
    "NotAVolumeError",
    "MultipleSeriesError",
    "GeometryMismatchError",
    "EmptyMaskError",
    "LesionTooLargeError",
    "InvalidVoxelsError",
    "VolumeTooLargeError",
    "UnsafeArchiveError",
    "ManifestError",
    "PatientImportError",
    "RegistrationError",
    "PlanValidationError",
    "UnknownAgentError",
    "CheckpointNotFoundError",
    "ModelOutputError",
    "PolicyError",
    "PolicyConnectionError",
    "PolicyRefusalError",
    "PolicyReplyError",
    "BatchError",
    "StudyError",
    "StudySetupError",
    "AccessDeniedError",
    "StudyClosedError",
    "AnswerConflictError",
    "MeWMWarning",
    "GeometryWarning",
    "ImputationWarning",
]


class MeWMError(Exception):
    """Base class of every error MeWM Workbench raises on purpose."""


class ConfigError(MeWMError, ValueError):
    """The configuration file, a CLI flag or an environment override is invalid."""


class DeviceUnavailableError(ConfigError):
    """A requested compute device (``--device cuda``, ``--amp``) is not available to torch on this machine. It is an
    error, never a silent fall-back to the CPU."""


# ----------------------------------------------------------------------------------------------- case input/output
class CaseIOError(MeWMError, ValueError):
    """A case (image, mask, archive, manifest) could not be loaded or written. Nothing was half-written."""


class UnreadableFileError(CaseIOError):
    """The file exists but cannot be decoded (corrupt, truncated, or not what its name says)."""


class UnsupportedFormatError(CaseIOError):
    """The file type is not one the loader reads."""


class NotCTError(CaseIOError):
    """The image is not a CT (e.g. DICOM modality MR or PT), or its intensities are not Hounsfield units."""


class NotAVolumeError(CaseIOError):
    """A single 2D slice (or too few slices) where a 3D volume is needed."""


class MultipleSeriesError(CaseIOError):
    """A DICOM folder or archive holds several series; the caller must choose one.

    Attributes:
        series: one dict per series with ``uid``, ``description``, ``modality``, ``n_slices``.
    """

    def __init__(self, message: str, series: list[dict]):
        super().__init__(message)
        self.series = series


class GeometryMismatchError(CaseIOError):
    """A mask (or post-treatment image) does not share the image's grid: size, spacing, origin or direction."""


class EmptyMaskError(CaseIOError):
    """A mask that must contain a structure (e.g. the tumour) is empty."""


class LesionTooLargeError(CaseIOError):
    """A lesion does not fit inside a model's tumour-centred crop, so the model cannot see (or change) all of it."""


class InvalidVoxelsError(CaseIOError):
    """The volume holds NaN or infinite voxels."""


class VolumeTooLargeError(CaseIOError):
    """The volume exceeds the configured size limit (voxels or bytes)."""


class UnsafeArchiveError(CaseIOError):
    """An uploaded archive is unsafe: a path escapes the target folder, or it expands far beyond its size."""


class ManifestError(CaseIOError):
    """A cohort manifest is missing, malformed, or names files that do not exist."""


class PatientImportError(CaseIOError):
    """One patient of a real-data download (`pipelines.realdata`) cannot be imported; the import goes on without it.

    Attributes:
        code: a short stable reason code (``"no-seg"``, ``"missing-referenced-ct"``, ``"empty-tumour"``...) that the
            import report counts; the message says what was seen and what to do.
    """

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


class RegistrationError(CaseIOError):
    """A follow-up CT could not be registered to its baseline CT (no overlap, optimiser failure, bad QA)."""


# ---------------------------------------------------------------------------------------------------- plans
class PlanValidationError(MeWMError, ValueError):
    """A TACE plan breaks a rule of the Action Base. ``rule`` names the rule (e.g. ``"R1 one platinum"``)."""

    def __init__(self, message: str, rule: str | None = None):
        super().__init__(message)
        self.rule = rule


class UnknownAgentError(PlanValidationError):
    """A name in a plan is not an agent or alias of the Action Base; the message suggests the closest names."""


# ---------------------------------------------------------------------------------------------------- models
class CheckpointNotFoundError(MeWMError, FileNotFoundError):
    """A model checkpoint is missing or incompatible; the message names the `mewm` command that makes it."""


class ModelOutputError(MeWMError, ValueError):
    """A model (policy, LM, network) returned output that fails validation (malformed JSON, NaN, wrong shape)."""


# ---------------------------------------------------------------------------------------------------- policy
class PolicyError(MeWMError):
    """A policy backend (`pipelines.policy`) could not produce a valid proposal; never replaced by an empty plan."""


class PolicyConnectionError(PolicyError, ConnectionError):
    """The policy server could not be reached, timed out, or answered with an HTTP error (status in the message)."""


class PolicyRefusalError(PolicyError):
    """The policy model refused to answer (or sent no usable content) on every allowed attempt."""


class PolicyReplyError(PolicyError, ValueError):
    """The policy model's replies stayed invalid (not the JSON schema, unknown agent, a rule broken) after retries.

    Attributes:
        problems: what was wrong with the last reply, one line each.
        raw_reply: the last reply's text (for audit).
        attempts: how many replies were requested.
    """

    def __init__(self, message: str, problems: list[str] | None = None, raw_reply: str | None = None,
                 attempts: int = 0):
        super().__init__(message)
        self.problems = list(problems or [])
        self.raw_reply = raw_reply
        self.attempts = attempts


class ReasoningInputError(MeWMError, ValueError):
    """A question for the reasoning chat is unusable (empty, no text, malformed options) or a setting is invalid."""


class BackendUnavailableError(MeWMError, ConnectionError):
    """A language-model backend did not answer: server unreachable, timed out, or refused the request."""


# ---------------------------------------------------------------------------------------------------- batch scoring
class BatchError(MeWMError, RuntimeError):
    """A batch scoring run (`pipelines.planning.batch`) cannot start or go on: its output folder holds a batch made
    with other settings, another run is writing to it, or a worker could not load the models. A bad *case* is never
    a BatchError: it is recorded under ``failed/`` and the batch goes on."""


# ---------------------------------------------------------------------------------------------------- reader studies
class StudyError(MeWMError, ValueError):
    """A Turing-test reader study request is invalid: unknown study, reader or item, or a bad answer."""


class StudySetupError(StudyError):
    """A study cannot be built as asked: too few source crops, crops of different geometry, bad settings."""


class AccessDeniedError(StudyError, PermissionError):
    """A wrong reader access code or admin passcode, or the admin view is locked (no passcode configured)."""


class StudyClosedError(StudyError):
    """The study is closed (or not yet open) for reading; the admin can reopen it."""


class AnswerConflictError(StudyError):
    """The reader already answered this item (e.g. in another browser tab); the first answer is kept."""


# ---------------------------------------------------------------------------------------------------- warnings
class MeWMWarning(UserWarning):
    """Base class of MeWM Workbench warnings."""


class GeometryWarning(MeWMWarning):
    """Geometry differs within tolerance, or was corrected (e.g. reoriented to RAS)."""


class ImputationWarning(MeWMWarning):
    """A model filled in missing inputs (e.g. clinical covariates replaced by training means); the result is flagged."""
