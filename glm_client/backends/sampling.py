"""Choosing the next token from logits, shared by every local engine."""

from __future__ import annotations

import torch

from glm_client.config import GenerationParams

# Top-p first looks among this many most likely tokens; only when they hold less than
# top_p of the probability does it sort the whole vocabulary. Sorting SmolLM2's 49k
# logits every token cost ~5 ms here, half a decode step of the packed path.
TOP_P_CANDIDATES = 512


def next_token(
    logits: torch.Tensor, seen: torch.Tensor, params: GenerationParams, generator: torch.Generator | None
) -> int:
    """Pick the next token like transformers' repetition-penalty, temperature and top-p processors.

    `logits` is a float32 vector the function may change; `seen` holds the ids the
    repetition penalty applies to.
    """
    if params.repetition_penalty != 1.0 and seen.numel():
        scores = logits[seen]
        logits[seen] = torch.where(scores < 0, scores * params.repetition_penalty, scores / params.repetition_penalty)
    if params.temperature == 0.0:
        return int(torch.argmax(logits))
    logits = logits / params.temperature
    if params.top_p < 1.0:
        values, ids = top_p_candidates(logits, params.top_p)
        choice = torch.multinomial(values.softmax(-1), 1, generator=generator)
        return int(ids[choice])
    probabilities = logits.softmax(-1)
    return int(torch.multinomial(probabilities, 1, generator=generator))


def top_p_candidates(logits: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits and ids of the nucleus, most likely first: the tokens transformers' TopPLogitsWarper keeps.

    It keeps a token when the tokens more likely than it hold less than `top_p` of the
    probability (always the most likely one).
    """
    total = torch.logsumexp(logits, dim=-1)
    values, ids = torch.topk(logits, min(TOP_P_CANDIDATES, logits.numel()))
    mass = (values - total).exp().cumsum(-1)
    if mass[-1] < top_p:  # a flat distribution: the nucleus reaches beyond the candidates
        values, ids = torch.sort(logits, descending=True)
        mass = (values - total).exp().cumsum(-1)
    before = mass - (values - total).exp()  # the probability of the tokens more likely than each
    keep = int((before < top_p).sum().clamp(min=1))
    return values[:keep], ids[:keep]
