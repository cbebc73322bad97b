"""Collecting per-rank results on every rank of a distributed run (a no-op in one process)."""
from collections import OrderedDict

import torch
import torch.distributed as dist


def gather_objects(obj):
    """List of ``obj`` from every rank, in rank order (just [obj] when not distributed). Collective."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_predictions(keys, preds, targets):
    """The predictions of a whole set from each rank's share. Collective.

    keys: M image keys of this rank; preds: (M, T) tensor; targets: (M, T) tensor or None.
    Returns (keys, preds (N, T), targets (N, T) or None) over all ranks, the first prediction of
    each key kept (samplers may repeat samples to even out ranks); targets is None unless every
    sample has one.
    """
    merged = OrderedDict()
    for shard_keys, shard_preds, shard_targets in gather_objects((keys, preds, targets)):
        for i, key in enumerate(shard_keys):
            if key not in merged:
                merged[key] = (shard_preds[i], None if shard_targets is None else shard_targets[i])
    all_preds = torch.stack([p for p, _ in merged.values()]) if merged else torch.empty(0, 1)
    has_targets = len(merged) > 0 and all(t is not None for _, t in merged.values())
    all_targets = torch.stack([t for _, t in merged.values()]) if has_targets else None
    return list(merged), all_preds, all_targets
