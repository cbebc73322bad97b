"""Gathering a validation set's predictions from the ranks' shares."""
import torch

import uiqa_plugin.rank_gather as rank_gather


def test_one_process_keeps_every_row_even_a_repeated_image():
    keys, preds, targets = rank_gather.gather_predictions(['a', 'b', 'a'], torch.tensor([[1.], [2.], [3.]]),
                                                          torch.tensor([[4.], [5.], [6.]]))
    assert keys == ['a', 'b', 'a'] and preds[:, 0].tolist() == [1, 2, 3] and targets[:, 0].tolist() == [4, 5, 6]


def test_samples_a_sampler_repeated_on_another_rank_are_dropped(monkeypatch):
    # DistributedSampler over 5 samples and 2 ranks: rank 0 gets 0, 2, 4; rank 1 gets 1, 3 and sample 0 again
    shards = [(['s0', 's2', 's4'], torch.tensor([[0.], [2.], [4.]]), None),
              (['s1', 's3', 's0'], torch.tensor([[1.], [3.], [0.5]]), None)]
    monkeypatch.setattr(rank_gather, 'gather_objects', lambda obj: shards)
    keys, preds, targets = rank_gather.gather_predictions(*shards[0])
    assert keys == ['s0', 's2', 's4', 's1', 's3'] and preds[:, 0].tolist() == [0, 2, 4, 1, 3] and targets is None
