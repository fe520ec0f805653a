"""The virtual HCC-TACE cohort: a documented simulator of patients, CT, TACE plans and survival with known truth.

Entry point: `pipelines.cohort.generate.generate_cohort` (``mewm cohort generate``). The equations and parameters
are in ``docs/DATA_CARD_cohort.md``. Models learn from the files it writes, never from this code.
"""
