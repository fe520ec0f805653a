"""The step-value head of the process reward model (PRM): per-step correctness logits from step embeddings.

MedS3's PRM is Llama-3.1-8B with a 2-way token-classification head read at the last token of each step
(arXiv 2501.12051; reference §4). On 2 CPU cores an 8B (or even the 135M policy) backbone is too slow to train and
to score N candidates per question, so the embedded PRM is a frozen sentence encoder (all-MiniLM-L6-v2, 384-d,
loaded by `pipelines.reasoning.prm`) plus this small trainable head:

1. inputs: the question embedding ``q`` (B×E), the step embeddings ``s`` (B×S×E, step 0 at index 0) and a few
   measured features per step ``f`` (B×S×F: length, empty/punctuation, final-answer sentence, parsed answer, ...);
2. similarity features computed here: cos(s_i, q) (restating the question), max_j<i cos(s_i, s_j) (repetition),
   cos(s_i, s_0) (an opener in disguise);
3. per step, [s_i, s_i ⊙ q, f_i, sims_i] → linear → width, plus a learned position embedding;
4. a *causal* transformer encoder (step i sees steps ≤ i only, as the reference's causal LM does), so a step's
   value never depends on later steps;
5. linear → 2 logits per step; p_i = softmax(logits_i)[1] (the reference's read-out). Step 0 gets logits too but is
   never trained or scored (callers mask it).

Shapes: ``question`` (B, E), ``steps`` (B, S, E), ``features`` (B, S, F), ``mask`` (B, S) bool (True = real step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["StepValueHead", "N_SIM_FEATURES"]

N_SIM_FEATURES = 3


class StepValueHead(nn.Module):
    """See the module docstring.

    Args:
        embed_dim: size of the encoder's sentence embeddings (384 for MiniLM-L6).
        n_features: measured features per step (`pipelines.reasoning.prm.STEP_FEATURES`).
        width: hidden size of the head; ``layers``/``heads``: its causal transformer; ``max_steps``: positions.
        dropout: dropout inside the transformer (training only).
    """

    def __init__(self, embed_dim: int = 384, n_features: int = 6, width: int = 128, layers: int = 2, heads: int = 4,
                 max_steps: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"StepValueHead: width ({width}) must be divisible by heads ({heads}).")
        if min(embed_dim, n_features, width, layers, heads, max_steps) < 1:
            raise ValueError("StepValueHead: embed_dim, n_features, width, layers, heads and max_steps must be >= 1.")
        self.config = dict(embed_dim=embed_dim, n_features=n_features, width=width, layers=layers, heads=heads,
                           max_steps=max_steps, dropout=dropout)
        self.max_steps = max_steps
        self.inp = nn.Sequential(nn.Linear(2 * embed_dim + n_features + N_SIM_FEATURES, width), nn.GELU(),
                                 nn.LayerNorm(width))
        self.pos = nn.Embedding(max_steps, width)
        block = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout, batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.out = nn.Linear(width, 2)

    @staticmethod
    def similarity_features(question: torch.Tensor, steps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, S, 3): cos to the question, max cos to an earlier step (0 for step 0), cos to step 0."""
        q = F.normalize(question, dim=-1)
        s = F.normalize(steps, dim=-1)
        to_q = torch.einsum("bse,be->bs", s, q)
        pair = torch.einsum("bie,bje->bij", s, s)
        earlier = torch.ones_like(pair, dtype=torch.bool).tril(-1) & mask[:, None, :]
        rep = pair.masked_fill(~earlier, -1.0).amax(-1).clamp(min=0.0)
        to_0 = pair[:, :, 0]
        return torch.stack([to_q, rep, to_0], dim=-1)

    def forward(self, question: torch.Tensor, steps: torch.Tensor, features: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """Logits (B, S, 2) for every step position (see the module docstring)."""
        b, s, _ = steps.shape
        if s > self.max_steps:
            raise ValueError(f"StepValueHead: {s} steps, more than max_steps={self.max_steps}; cut the response.")
        if features.shape[:2] != (b, s) or mask.shape != (b, s) or question.shape[0] != b:
            raise ValueError(f"StepValueHead: inconsistent shapes question {tuple(question.shape)}, steps "
                             f"{tuple(steps.shape)}, features {tuple(features.shape)}, mask {tuple(mask.shape)}.")
        mask = mask.bool()
        sims = self.similarity_features(question, steps, mask)
        x = torch.cat([steps, steps * question[:, None, :], features, sims], dim=-1)
        h = self.inp(x) + self.pos(torch.arange(s, device=steps.device))[None]
        causal = torch.ones(s, s, dtype=torch.bool, device=steps.device).triu(1)
        h = self.body(h, mask=causal, src_key_padding_mask=~mask)
        return self.out(h)

    def step_probabilities(self, question, steps, features, mask) -> torch.Tensor:
        """(B, S) p(step is good) = softmax(logits)[..., 1]."""
        return self.forward(question, steps, features, mask).softmax(-1)[..., 1]
