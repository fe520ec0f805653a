"""Data I/O, the virtual cohort, preprocessing, training, planning, evaluation and the `mewm` CLI."""
