"""BERT's MLM masking (80/10/10), fully determined by an explicit ``torch.Generator`` so that a resumed run masks
exactly as before, and the seeds the training loop draws its masks with."""
from __future__ import annotations

from typing import Optional

import torch

MASK_SEED = 1_000_003      # step s masks with generator seed (pretrain.seed * MASK_SEED + s)
EVAL_MASK_SEED = 7_777     # held-out eval always masks the same way


def attention_mask(input_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """1 where ``input_ids`` is not padding, else 0 (same shape, long)."""
    return (input_ids != pad_id).long()


def mask_tokens(input_ids: torch.Tensor, tokenizer, mlm_probability: float = 0.15,
                generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: returns ``(masked_input_ids, labels)``.

    Each non-special, non-pad token is selected with probability ``mlm_probability``; a selected
    token becomes [MASK] (80%), a random non-special token (10%) or stays (10%). ``labels`` holds
    the original id at selected positions and -100 elsewhere. Every random draw comes from
    ``generator`` (three draws of fixed shape), so the same generator state gives the same masks.
    Written here rather than with ``DataCollatorForLanguageModeling`` because the collator owns its
    generator (a ``seed`` at construction, not one per call) and draws random replacements from
    the whole vocabulary, special tokens included.
    """
    device = input_ids.device        # draws happen on the (CPU) generator's device, results move back
    input_ids = input_ids.cpu()
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=input_ids.dtype)
    can_mask = ~torch.isin(input_ids, special)
    u = torch.rand(input_ids.shape, generator=generator)
    how = torch.rand(input_ids.shape, generator=generator)
    normal = torch.ones(len(tokenizer), dtype=torch.bool)
    normal[special] = False
    pool = normal.nonzero().squeeze(1)
    rnd = pool[torch.randint(len(pool), input_ids.shape, generator=generator)]
    selected = can_mask & (u < mlm_probability)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))
    out = input_ids.clone()
    out[selected & (how < 0.8)] = tokenizer.mask_token_id
    swap = selected & (how >= 0.8) & (how < 0.9)
    out[swap] = rnd[swap].to(out.dtype)
    return out.to(device), labels.to(device)
