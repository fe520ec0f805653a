"""Reasoning chat (issue 5): a MedS3-style small medical model with process-reward best-of-N. Research use only.

Modules: `template` (the one prompt template), `answers` (strict parsing), `data` (reference-format files and the
fixed train/dev split), `backends` (smollm2 / hf / openai policy LMs), `candidates`, `prm` (step scorers),
`best_of_n` (aggregation, P-VS, vote, guards), `chat` (one question end to end), `evolve` (MCTS), `train_prm`,
`train_policy`, `evaluate`, `bench`, `cli`.
"""
