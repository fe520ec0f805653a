"""Case input/output: read, check, de-identify, summarise and write CT cases.

Entry points: `load_case` (files → checked `Case`), `load_uploaded_case` (web uploads), `load_volume` (one image
through the reader registry), `case_summary`, `case_info_text` (`mewm case info`), `write_nifti`, `write_volume`,
`write_dicom_series`. Conventions: `pipelines.volume` (array ``[i, j, k]``, voxel→RAS affine).
"""

from pipelines.caseio.archive import extract_zip
from pipelines.caseio.deid import DeidReport, Deidentifier, installation_salt
from pipelines.caseio.dicom import read_dicom_series, write_dicom_series
from pipelines.caseio.geometry import check_same_grid, resample, resample_like, to_ras
from pipelines.caseio.info import case_info_text
from pipelines.caseio.loader import load_case, load_uploaded_case, parse_clinical
from pipelines.caseio.nifti import read_nifti, write_nifti
from pipelines.caseio.readers import READERS, SUPPORTED, load_volume, write_volume
from pipelines.caseio.summary import CaseSummary, LesionSummary, case_summary

__all__ = [
    "load_case", "load_uploaded_case", "load_volume", "parse_clinical", "case_summary", "CaseSummary",
    "LesionSummary", "case_info_text", "read_nifti", "write_nifti", "write_volume", "read_dicom_series",
    "write_dicom_series", "extract_zip", "Deidentifier", "DeidReport", "installation_salt", "check_same_grid",
    "to_ras", "resample", "resample_like", "READERS", "SUPPORTED",
]
