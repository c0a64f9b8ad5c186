"""Choosing the next token from logits, shared by every local engine."""

from __future__ import annotations

import torch

from glm_client.config import GenerationParams


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
        sorted_logits, order = torch.sort(logits, descending=False)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        remove = cumulative <= 1 - params.top_p
        remove[-1] = False  # always keep the most likely token
        logits[order[remove]] = float("-inf")
    probabilities = logits.softmax(-1)
    return int(torch.multinomial(probabilities, 1, generator=generator))
