"""Virtual HCC patients: covariates, lesion descriptions and latent tumour biology.

Every number here is a rule of the synthetic world, documented in ``docs/DATA_CARD_cohort.md``. Models must learn
from the files the cohort writes, never from this module.

Generative story (one patient, one ``numpy.random.Generator``):

1. Liver disease: cirrhosis severity ``c ~ Beta(2, 3)`` drives albumin, bilirubin, INR, ascites and so the
   Child-Pugh score (patients with Child-Pugh C are redrawn: TACE candidates are A/B). ``c`` is also visible in the CT
   (nodular liver surface, right-lobe atrophy, caudate hypertrophy, splenomegaly).
2. Tumour biology (latent, each ``Beta(2, 2)`` on [0, 1]): vascularity ``v``, proliferation ``p``, stromal
   heterogeneity ``h``. They are visible with noise: arterial enhancement (``v``), AFP (``p``), texture (``h``),
   capsule (``h``), central necrosis (``p`` and size).
3. Per-drug-class sensitivities ``s_k = sigmoid(a_k . (z - 0.5) + b_k + e_k)`` with ``z = (v, p, h)`` and a hidden
   ``e_k ~ N(0, SENS_NOISE_SD)``: learnable from the images and labs, but not exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from pipelines.case import Covariates

__all__ = [
    "DRUG_CLASSES",
    "SENSITIVITY_WEIGHTS",
    "SENS_NOISE_SD",
    "Lesion",
    "Biology",
    "Patient",
    "sample_patient",
    "child_pugh_score",
]

# Latent drug-class sensitivity model: class -> (weights on (v, p, h) centred at 0.5, bias). The classes are the
# simulator's own grouping of the Action Base classes (see `response.sensitivity_class`).
DRUG_CLASSES = ("anthracycline", "platinum", "antimetabolite", "antibiotic", "topoisomerase")
SENSITIVITY_WEIGHTS: dict[str, tuple[tuple[float, float, float], float]] = {
    "anthracycline": ((6.0, 0.0, -1.0), 0.0),  # hypervascular tumours take up anthracycline emulsions/beads
    "platinum": ((-1.0, 6.0, 0.0), 0.0),  # proliferative (high-AFP) tumours respond to platinum
    "antimetabolite": ((0.0, -2.0, 6.0), -0.2),  # heterogeneous/stromal tumours respond to raltitrexed
    "antibiotic": ((-6.0, 0.0, 1.0), -0.2),  # hypovascular (hypoxic) tumours: mitomycin is bioreductive
    "topoisomerase": ((0.0, -5.0, -4.0), -0.6),  # indolent, homogeneous tumours
}
SENS_NOISE_SD = 0.6


@dataclass(frozen=True)
class Lesion:
    """One HCC lesion, described in a liver-relative frame so it can be rendered on any grid.

    Args:
        diameter_mm: equivalent spherical diameter.
        centre_frac: ``(3,)`` centre in the right-lobe frame, each coordinate in [-1, 1] (scaled by the lobe's
            semi-axes minus the lesion radius at render time).
        axes_ratio: ``(3,)`` relative semi-axes (product ≈ 1).
        irregularity: amplitude of the smoothed radial perturbation (0 = smooth ellipsoid).
        capsule: whether a capsule rim is drawn.
        necrosis_frac: radius fraction of the central necrotic core (0 = none).
        shape_seed: seed of the lesion's perturbation field.
    """

    diameter_mm: float
    centre_frac: tuple[float, float, float]
    axes_ratio: tuple[float, float, float]
    irregularity: float
    capsule: bool
    necrosis_frac: float
    shape_seed: int

    @property
    def volume_ml(self) -> float:
        return float(np.pi / 6.0 * self.diameter_mm**3 / 1000.0)


@dataclass(frozen=True)
class Biology:
    """Latent tumour and liver biology (hidden truth; written only to the oracle folder)."""

    cirrhosis: float  # c in [0, 1]
    vascularity: float  # v
    proliferation: float  # p
    heterogeneity: float  # h
    sensitivity: dict[str, float]  # drug class -> s_k in (0, 1)
    lipiodol_retention: float  # fraction of the treated tumour that holds Lipiodol in cTACE, in [0, 1]


@dataclass(frozen=True)
class Patient:
    """A virtual patient: what a clinic records (covariates), what the CT shows (lesions, appearance), and the truth.

    ``enhancement_hu`` is the arterial-phase lesion-minus-liver attenuation; ``texture_sd_hu`` the lesion's texture
    standard deviation; both are rendered into the CT (plus image noise).
    """

    index: int
    covariates: Covariates
    lesions: tuple[Lesion, ...]
    enhancement_hu: float
    texture_sd_hu: float
    inr: float
    ascites: int  # 0 none, 1 mild, 2 moderate
    biology: Biology = field(repr=False)

    @property
    def tumour_volume_ml(self) -> float:
        return float(sum(les.volume_ml for les in self.lesions))

    @property
    def max_diameter_mm(self) -> float:
        return float(max(les.diameter_mm for les in self.lesions))

    def visible_features(self) -> dict[str, float]:
        """Numbers a model could measure from the pre-treatment CT and the labs (no hidden truth)."""
        cov = self.covariates
        return {
            "age": float(cov.age),
            "male": float(cov.sex == "M"),
            "hbv": float(cov.hbv),
            "log10_afp": float(np.log10(cov.afp)),
            "albumin": float(cov.albumin),
            "bilirubin": float(cov.bilirubin),
            "child_pugh_score": float(cov.child_pugh_score),
            "ecog": float(cov.ecog),
            "vascular_invasion": float(cov.vascular_invasion),
            "n_lesions": float(cov.n_lesions),
            "max_diameter_mm": float(cov.max_diameter_mm),
            "enhancement_hu": self.enhancement_hu,
            "texture_sd_hu": self.texture_sd_hu,
            "capsule": float(self.lesions[0].capsule),
            "necrosis_frac": float(self.lesions[0].necrosis_frac),
        }

    def latent_dict(self) -> dict:
        return asdict(self.biology)


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def child_pugh_score(bilirubin: float, albumin: float, inr: float, ascites: int, encephalopathy: int = 0) -> int:
    """Child-Pugh score (5-15) from bilirubin (µmol/L), albumin (g/L), INR, ascites grade and encephalopathy grade."""
    s = 1 if bilirubin < 34 else 2 if bilirubin <= 50 else 3
    s += 1 if albumin > 35 else 2 if albumin >= 28 else 3
    s += 1 if inr < 1.7 else 2 if inr <= 2.3 else 3
    s += 1 + int(ascites)
    s += 1 + int(encephalopathy)
    return s


def _bclc(n: int, dmax: float, cp_class: str, ecog: int, vi: bool) -> str:
    if vi or ecog >= 1:
        return "C"
    if n == 1 and dmax < 20 and cp_class == "A":
        return "0"
    if n == 1 or dmax <= 30:
        return "A"
    return "B"


SATELLITE_GAP_MM = 10.0  # minimum tissue gap kept between two lesions' outer envelopes
SATELLITE_TRIES = 200


def _centre_mm(frac: np.ndarray, diameter: float, ratio: np.ndarray, lobe_semi: np.ndarray) -> np.ndarray:
    """Lesion centre relative to the lobe centre (mm), exactly as `lesions.lesion_field` places it."""
    return frac * np.maximum(lobe_semi - diameter / 2.0 * float(np.max(ratio)), 0.0)


def _min_separation_mm(a: tuple, b: tuple, cirrhosis: float) -> float:
    """Smallest centre distance of two lesions ``(frac, diameter, ratio)`` over every lobe size the anatomy may draw.

    Each axis offset is linear in that axis' lobe semi-axis, so its smallest magnitude over the jitter range is 0
    when it changes sign there, else the smaller end.
    """
    from pipelines.cohort.anatomy import LOBE_JITTER, LOBE_SEMI_MM

    ends = [np.asarray(LOBE_SEMI_MM) * j * (1.0 - 0.3 * cirrhosis) for j in LOBE_JITTER]
    d0, d1 = (_centre_mm(*a, lobe) - _centre_mm(*b, lobe) for lobe in ends)
    per_axis = np.where(np.sign(d0) != np.sign(d1), 0.0, np.minimum(np.abs(d0), np.abs(d1)))
    return float(np.linalg.norm(per_axis))


def _place_satellite(rng: np.random.Generator, diameter: float, ratio: np.ndarray, placed: list, cirrhosis: float,
                     irregularity: float) -> tuple[float, np.ndarray] | None:
    """Diameter and ``centre_frac`` of a satellite lesion that keeps `SATELLITE_GAP_MM` from every placed lesion.

    When no centre fits after `SATELLITE_TRIES`, the satellite shrinks by 15% and the search repeats; ``None`` when
    not even a 10 mm satellite fits (a small cirrhotic lobe filled by a large primary): the patient then has fewer
    lesions than first drawn.
    """
    reach = float(np.max(ratio)) * (1.0 + 3.0 * irregularity) / 2.0  # outer radius per unit diameter (3 SD bumps)
    while True:
        for _ in range(SATELLITE_TRIES):
            frac = rng.uniform(-0.85, 0.85, size=3)
            if np.linalg.norm(frac) > 0.85:  # outside the lobe ellipsoid: not in the liver
                continue
            if all(_min_separation_mm((frac, diameter, ratio), (np.asarray(o.centre_frac), o.diameter_mm,
                                                                  np.asarray(o.axes_ratio)), cirrhosis)
                   >= reach * diameter + float(np.max(o.axes_ratio)) * (1.0 + 3.0 * irregularity) / 2.0
                   * o.diameter_mm + SATELLITE_GAP_MM for o in placed):
                return diameter, frac
        if diameter <= 10.0:
            return None
        diameter = max(10.0, diameter * 0.85)


def sample_patient(rng: np.random.Generator, index: int = 0) -> Patient:
    """Draw one patient. All randomness comes from ``rng`` (a per-patient generator)."""
    # 1. liver disease (redraw Child-Pugh C: not a TACE candidate)
    while True:
        c = float(rng.beta(2.0, 3.0))
        albumin = float(np.clip(44.0 - 16.0 * c + rng.normal(0, 2.5), 18.0, 52.0))
        bilirubin = float(np.clip(np.exp(np.log(12.0) + 1.8 * c + rng.normal(0, 0.25)), 4.0, 120.0))
        inr = float(np.clip(1.0 + 0.7 * c + rng.normal(0, 0.08), 0.85, 3.0))
        ascites = int(rng.random() < max(0.0, c - 0.35) * 1.5) + int(rng.random() < max(0.0, c - 0.7) * 2.0)
        cp = child_pugh_score(bilirubin, albumin, inr, ascites)
        if cp <= 9:
            break
    cp_class = "A" if cp <= 6 else "B"

    # 2. latent biology and its visible proxies
    v, p, h = (float(rng.beta(2.0, 2.0)) for _ in range(3))
    z = np.array([v, p, h]) - 0.5
    sens = {}
    for k in DRUG_CLASSES:
        w, b = SENSITIVITY_WEIGHTS[k]
        sens[k] = _sigmoid(float(np.dot(w, z)) + b + float(rng.normal(0, SENS_NOISE_SD)))
    retention = float(np.clip(0.15 + 0.8 * v + rng.normal(0, 0.08), 0.02, 0.95))
    enhancement = float(15.0 + 100.0 * v + rng.normal(0, 8.0))
    texture = float(max(3.0, 6.0 + 24.0 * h + rng.normal(0, 3.0)))
    afp = float(np.clip(10 ** (0.6 + 3.2 * p + rng.normal(0, 0.45)), 1.0, 200000.0))

    # 3. lesions (satellites placed apart from each other, so a radiologist counts ``n`` separate lesions)
    n = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
    dmax = float(np.clip(np.exp(np.log(40.0) + 0.5 * rng.normal()), 10.0, 100.0))
    capsule = bool(h + rng.normal(0, 0.15) < 0.55)
    irregularity = float(0.04 + 0.22 * h * (0.5 if capsule else 1.0))
    lesions: list[Lesion] = []
    for i in range(n):
        ratio = rng.uniform(0.75, 1.3, size=3)
        ratio = ratio / np.prod(ratio) ** (1 / 3)
        if i == 0:
            d, centre = dmax, rng.uniform(-0.4, 0.4, size=3)
        else:
            placed = _place_satellite(rng, float(max(10.0, dmax * rng.uniform(0.3, 0.85))), ratio, lesions, c,
                                      irregularity)
            if placed is None:
                break
            d, centre = placed
        nec = float(np.clip((d - 30.0) / 70.0 * (0.3 + 0.7 * p) + rng.normal(0, 0.05), 0.0, 0.6)) if d > 30 else 0.0
        lesions.append(Lesion(
            diameter_mm=round(d, 1),
            centre_frac=tuple(float(x) for x in centre),
            axes_ratio=tuple(float(x) for x in ratio),
            irregularity=irregularity,
            capsule=capsule if i == 0 else bool(capsule and rng.random() < 0.7),
            necrosis_frac=round(nec, 3),
            shape_seed=int(rng.integers(0, 2**31 - 1)),
        ))
    n = len(lesions)
    # what a radiologist reports: the longest axial (x-y) axis of the largest lesion
    axial_dmax = lesions[0].diameter_mm * max(lesions[0].axes_ratio[:2]) * (1.0 + irregularity)

    # 4. covariates
    ecog = int(rng.choice([0, 1, 2], p=[0.75, 0.2, 0.05]))
    vi = bool(rng.random() < 0.05 + 0.25 * p)
    cov = Covariates(
        age=round(float(np.clip(rng.normal(60, 10), 30, 88)), 0),
        sex="M" if rng.random() < 0.8 else "F",
        hbv=bool(rng.random() < 0.7),
        afp=round(afp, 1),
        albumin=round(albumin, 1),
        bilirubin=round(bilirubin, 1),
        child_pugh=cp_class,
        child_pugh_score=cp,
        bclc=_bclc(n, axial_dmax, cp_class, ecog, vi),
        ecog=ecog,
        vascular_invasion=vi,
        n_lesions=n,
        max_diameter_mm=round(axial_dmax, 1),
    )
    bio = Biology(cirrhosis=c, vascularity=v, proliferation=p, heterogeneity=h, sensitivity=sens,
                  lipiodol_retention=retention)
    return Patient(index=index, covariates=cov, lesions=tuple(lesions), enhancement_hu=round(enhancement, 1),
                   texture_sd_hu=round(texture, 1), inr=round(inr, 2), ascites=ascites, biology=bio)
