"""Visual Turing-test reader studies: can radiologists tell the world model's post-treatment images from real ones?

Modules: `tables` (SQLAlchemy models), `access` (reader codes, admin passcode), `sources` (cohort or folders),
`render` and `setup` (items rendered ahead of time under opaque ids), `store` (every read and write), `stats`
(Wilson intervals, Fleiss' kappa), `export` (CSV), `cli` (``mewm study ...``).
"""
