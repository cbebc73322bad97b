"""Collecting per-rank results on every rank of a distributed run (a no-op in one process)."""
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
    Returns (keys, preds (N, T), targets (N, T) or None) over all ranks in rank order; targets is None
    unless every sample has one. A key that an earlier rank already gave is left out: a distributed
    sampler repeats the first samples on other ranks to even out the shares. A key repeated within one
    rank's share is kept: the set itself lists that image twice, as a one-process run counts it.
    """
    first_rank, entries = {}, []
    for rank, (shard_keys, shard_preds, shard_targets) in enumerate(gather_objects((keys, preds, targets))):
        for i, key in enumerate(shard_keys):
            if first_rank.setdefault(key, rank) == rank:
                entries.append((key, shard_preds[i], None if shard_targets is None else shard_targets[i]))
    all_preds = torch.stack([p for _, p, _ in entries]) if entries else torch.empty(0, 1)
    has_targets = len(entries) > 0 and all(t is not None for _, _, t in entries)
    all_targets = torch.stack([t for _, _, t in entries]) if has_targets else None
    return [k for k, _, _ in entries], all_preds, all_targets
