"""DICOM de-identification on import: a subset of the DICOM PS3.15 Basic Application Level Confidentiality Profile.

Applied to every imported dataset before anything else reads it (`pipelines.caseio.dicom` calls it right after
`pydicom.dcmread`). What it does, per dataset (and recursively inside sequences):

- removes identifying attributes (`REMOVED_KEYWORDS`: birth date, addresses, other IDs/names, institution,
  physicians, operators, accession number, study ID, station, device serial number, free-text comments);
- replaces PatientName and PatientID by a pseudonym (a keyed hash of the original PatientID);
- reduces every date (DA) to January 1st of its year and every date-time (DT) to its year;
- removes all private tags;
- remaps every instance UID (study, series, SOP instance, frame of reference, ...) to ``2.25.<keyed hash>``, so the
  same original UID gives the same new UID within and across files (and, with the installation salt, across
  imports); well-known UIDs (SOP classes, transfer syntaxes) are kept.

Kept on purpose: modality, series description, patient sex and age, acquisition parameters, geometry and pixels.
Burned-in text in the pixels is not detected. Reports name attributes, never values, so nothing here logs PHI.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

__all__ = ["REMOVED_KEYWORDS", "DeidReport", "Deidentifier", "installation_salt"]

REMOVED_KEYWORDS: tuple[str, ...] = (
    "PatientBirthDate", "PatientBirthTime", "PatientBirthName", "PatientAddress", "PatientTelephoneNumbers",
    "PatientMotherBirthName", "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames",
    "MedicalRecordLocator", "PatientInsurancePlanCodeSequence", "MilitaryRank", "BranchOfService",
    "CountryOfResidence", "RegionOfResidence", "EthnicGroup", "Occupation", "PatientReligiousPreference",
    "AdditionalPatientHistory", "PatientComments", "InstitutionName", "InstitutionAddress",
    "InstitutionalDepartmentName", "InstitutionCodeSequence", "ReferringPhysicianName",
    "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers", "ReferringPhysicianIdentificationSequence",
    "PerformingPhysicianName", "PerformingPhysicianIdentificationSequence", "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence", "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence", "OperatorsName", "OperatorIdentificationSequence",
    "RequestingPhysician", "ScheduledPerformingPhysicianName", "AccessionNumber", "StudyID", "StationName",
    "DeviceSerialNumber", "ImageComments", "StudyComments", "RequestAttributesSequence",
    "PerformedProcedureStepID", "PerformedProcedureStepDescription", "RequestedProcedureID",
    "StudyDescription", "ProtocolName", "IssuerOfPatientID", "PatientSize", "PatientWeight",
    "ContentCreatorName", "PersonName", "VerifyingObserverName", "ResponsiblePerson", "ResponsibleOrganization",
)
PSEUDONYM_KEYWORDS = ("PatientName", "PatientID")
# UIDs that name a class or an encoding, not an instance: never remapped.
KEPT_UID_KEYWORDS = frozenset({
    "SOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID", "ImplementationClassUID",
    "ReferencedSOPClassUID", "ReferencedSOPClassUIDInFile", "AffectedSOPClassUID", "RequestedSOPClassUID",
    "CodingSchemeUID", "RelatedGeneralSOPClassUID", "OriginalSpecializedSOPClassUID",
})
# File-meta attributes that can name the sending site.
META_REMOVED_KEYWORDS = ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                         "ReceivingApplicationEntityTitle", "PrivateInformationCreatorUID", "PrivateInformation")
SALT_FILE = "deid_salt.bin"


@dataclass
class DeidReport:
    """What de-identification did (attribute keywords and counts only, never values)."""

    n_datasets: int = 0
    removed: set[str] = field(default_factory=set)
    pseudonymised: set[str] = field(default_factory=set)
    n_dates_reduced: int = 0
    n_private_removed: int = 0
    n_uids_remapped: int = 0

    def summary(self) -> str:
        return (f"de-identified {self.n_datasets} DICOM file(s): removed {len(self.removed)} identifying "
                f"attribute type(s), pseudonymised {', '.join(sorted(self.pseudonymised)) or 'nothing'}, "
                f"reduced {self.n_dates_reduced} date(s) to the year, removed {self.n_private_removed} private "
                f"tag(s), remapped {self.n_uids_remapped} UID(s)")


def installation_salt(data_dir: str | os.PathLike) -> bytes:
    """The secret key of this installation's pseudonyms (created once in ``data_dir``, mode 0600).

    With it, the same patient or series gets the same pseudonym/UID in every import on this installation, which
    lets a user pick a series by the UID shown in an earlier error. Without the file nobody can invert the hashes.
    """
    folder = Path(data_dir).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SALT_FILE
    if not path.exists():
        tmp = folder / f".{SALT_FILE}.{secrets.token_hex(6)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(32))
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # atomic: exactly one concurrent creator wins, the others read its key
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    salt = path.read_bytes()
    if len(salt) < 16:
        from models.errors import ConfigError

        raise ConfigError(f"De-identification key {path} is damaged ({len(salt)} bytes); delete it to make a new one "
                          f"(pseudonyms of earlier imports will change).")
    return salt


class Deidentifier:
    """De-identifies the datasets of one import consistently (same input UID → same output UID).

    Args:
        salt: secret key of the keyed hash (HMAC-SHA256). ``None`` draws a fresh random key, so pseudonyms are
            consistent within this object only; pass `installation_salt(...)` for stable pseudonyms.
    """

    def __init__(self, salt: bytes | None = None):
        self._salt = salt if salt is not None else secrets.token_bytes(32)
        self.report = DeidReport()

    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self._salt, f"{kind}\0{value}".encode(), hashlib.sha256).digest()

    def pseudonym(self, patient_id: str) -> str:
        """``ANON-`` plus 10 hex characters of the keyed hash of the original patient ID."""
        return "ANON-" + self._digest("patient", patient_id).hex()[:10]

    def remap_uid(self, uid: str) -> str:
        """A new UID under the ``2.25`` (UUID-derived) root: at most 44 characters, always valid."""
        return "2.25." + str(int.from_bytes(self._digest("uid", str(uid))[:16], "big"))

    def __call__(self, ds: Dataset, *, record: bool = True) -> Dataset:
        """De-identify ``ds`` in place (file meta included) and return it.

        ``record=False`` leaves `report` unchanged (for a second pass over a file already counted).
        """
        from pydicom.uid import UID

        report = self.report if record else DeidReport()
        report.n_datasets += 1
        n_private = sum(1 for _ in _walk_private(ds))
        ds.remove_private_tags()
        report.n_private_removed += n_private
        patient_id = str(ds.get("PatientID", "") or "")
        pseudonym = self.pseudonym(patient_id)

        def visit(dataset: Dataset, elem) -> None:
            keyword = elem.keyword
            if keyword in REMOVED_KEYWORDS:
                del dataset[elem.tag]
                report.removed.add(keyword)
            elif keyword in PSEUDONYM_KEYWORDS:
                elem.value = pseudonym
                report.pseudonymised.add(keyword)
            elif elem.VR == "DA" and elem.value:
                elem.value = _reduce_date(elem.value)
                report.n_dates_reduced += 1
            elif elem.VR == "DT" and elem.value:
                elem.value = str(elem.value)[:4]
                report.n_dates_reduced += 1
            elif elem.VR == "UI" and elem.value and keyword not in KEPT_UID_KEYWORDS:
                values = elem.value if elem.VM > 1 else [elem.value]
                # a UID pydicom can name is a well-known class/syntax UID, not an instance
                remapped = [v if UID(str(v)).name != str(v) else self.remap_uid(str(v)) for v in values]
                report.n_uids_remapped += sum(1 for a, b in zip(values, remapped) if a != b)
                elem.value = remapped if elem.VM > 1 else remapped[0]

        ds.walk(visit)
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "MediaStorageSOPInstanceUID" in meta:
            meta.MediaStorageSOPInstanceUID = self.remap_uid(str(meta.MediaStorageSOPInstanceUID))
        for keyword in META_REMOVED_KEYWORDS:
            if meta is not None and keyword in meta:
                del meta[keyword]
                report.removed.add(keyword)
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = "MeWM Workbench basic-profile subset (keyed-hash pseudonyms)"
        return ds


def _walk_private(ds: Dataset):
    for elem in ds:
        if elem.tag.is_private:
            yield elem
        elif elem.VR == "SQ":
            for item in elem.value:
                yield from _walk_private(item)


def _reduce_date(value) -> str:
    """``YYYYMMDD`` → ``YYYY0101``; a multi-valued date keeps one reduced value per entry."""
    if isinstance(value, (list, tuple)) or getattr(value, "__iter__", None) and not isinstance(value, str):
        return [_reduce_date(v) for v in value]  # type: ignore[return-value]
    text = str(value)
    return text[:4] + "0101" if len(text) >= 4 and text[:4].isdigit() else ""
