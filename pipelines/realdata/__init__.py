"""Real data: import the public HCC-TACE-Seg cohort (`hcc_tace_seg`), register follow-ups (`register`), evaluate
(`evaluate`). Every output is in the project's manifest format, so training, planning and scoring run unchanged.
Research use only, not for clinical use."""
