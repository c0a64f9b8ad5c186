"""How the fast paths are held to the reference (transformers' own forward), in the bench and tests.

- Greedy choices: along the reference's greedy reply to each of a fixed set of
  prompts, the fast path must pick the reference's token wherever the reference's
  lead over its runner-up is clear (more than NEAR_TIE). Exact equality of whole
  replies is not a fair test even between two bf16 paths: the reference's own logits
  move by several bf16 steps between its prefill and its decode, so a near-tie can
  go either way and the reply then differs from there on.
- Perplexity on a fixed text, within PERPLEXITY_TOLERANCE, for quantized weights.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from glm_client.engines.decoding import Row

PERPLEXITY_TOLERANCE = 0.02
# A lead of this many logits or less is a tie: two bf16 steps at the embedded model's logit scale (~20).
NEAR_TIE = 0.25

# A plain paragraph no chat template touches; about 400 tokens for SmolLM2's tokenizer.
QUALITY_TEXT = (
    "The history of the bicycle begins in the early nineteenth century, when inventors in Europe built "
    "two-wheeled machines that riders pushed along with their feet. Pedals came later, first on the front "
    "wheel, which grew larger and larger to carry the rider further with each turn. These high-wheelers were "
    "fast but dangerous, and a fall from one could be serious. The safety bicycle, with two wheels of equal "
    "size and a chain driving the rear wheel, changed everything in the 1880s. Pneumatic tyres followed soon "
    "after, making the ride smoother and faster. Within a few years, millions of people could travel farther "
    "and more cheaply than ever before, and the bicycle became a symbol of independence, especially for women. "
    "Today bicycles are used for commuting, sport, and recreation all over the world, and cities build lanes "
    "to make cycling safer.\n\n"
    "Bread is one of the oldest prepared foods. Archaeologists have found traces of flatbreads baked more than "
    "fourteen thousand years ago, long before farming began. Once people grew wheat and barley, bread became a "
    "staple across Europe, the Middle East and North Africa. Leavened bread rises because yeast turns sugars in "
    "the dough into carbon dioxide, which is trapped by a stretchy network of gluten. Bakers learned to keep a "
    "piece of each day's dough to start the next batch, a practice that survives in sourdough today. Industrial "
    "mills and ovens in the nineteenth and twentieth centuries made white bread cheap and uniform, while many "
    "small bakeries now return to slow fermentation, whole grains and wood-fired ovens.\n\n"
    "A lighthouse guides ships along dangerous coasts. Early lighthouses burned wood or coal in open fires at "
    "the top of a tower. Later, oil lamps with reflectors and then the Fresnel lens, invented in France in "
    "1822, sent a focused beam many miles out to sea. Each lighthouse has its own pattern of flashes, so "
    "sailors can tell which one they are seeing at night. Keepers once lived at the lights and tended them by "
    "hand, but today nearly all lighthouses are automatic."
)


def clear_disagreements(reference: torch.Tensor, candidate: torch.Tensor) -> int:
    """Positions where the top tokens differ although the reference's lead is more than NEAR_TIE; [positions, vocab]."""
    top_two = reference.float().topk(2, dim=-1).values
    clear = (top_two[:, 0] - top_two[:, 1]) > NEAR_TIE
    differ = reference.argmax(-1) != candidate.argmax(-1)
    return int((clear & differ).sum())


def perplexity(logits: torch.Tensor, targets: list[int]) -> float:
    """exp of the mean negative log-likelihood of `targets` under `logits` [len(targets), vocab]."""
    return math.exp(float(F.cross_entropy(logits.float(), torch.tensor(targets))))


def reference_logits(model: Any, prompt: list[int], reply: list[int]) -> torch.Tensor:
    """A transformers model's logits before each token of `reply`, from one full forward; [len(reply), vocab]."""
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prompt + reply])).logits[0]
    return logits[len(prompt) - 1 : len(prompt) + len(reply) - 1].float()


def decoder_logits(decoder: Any, prompt: list[int], reply: list[int]) -> torch.Tensor:
    """The same from a SequenceDecoder's model: prefill `prompt`, then feed `reply` one token at a time."""
    cache = decoder.model.new_cache(decoder.context_length)
    try:
        rows = [decoder.model.forward([Row(cache, prompt)])[0]]
        for token in reply[:-1]:
            rows.append(decoder.model.forward([Row(cache, [token])])[0])
    finally:
        cache.release()
    return torch.stack(rows).float()
