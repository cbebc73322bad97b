"""Regression heads that map CLIP probabilities to a quality score."""
import torch.nn as nn


class QualityRegressor(nn.Sequential):
    """Linear(in, 128) - LeakyReLU(0.1) - Linear(128, 128) - LeakyReLU(0.1) - Linear(128, 1), the CLIP-IQA+ head.

    (N, in_dim) -> (N, 1). Layer names linear_1..3 match the CLIP-IQA+ reference checkpoint.
    """

    def __init__(self, in_dim, hidden=128, negative_slope=0.1):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, hidden)
        self.act_1 = nn.LeakyReLU(negative_slope)
        self.linear_2 = nn.Linear(hidden, hidden)
        self.act_2 = nn.LeakyReLU(negative_slope)
        self.linear_3 = nn.Linear(hidden, 1)
