"""An exponential moving average of a network's trainable parameters (BasicSR's ``net_g_ema``)."""
import contextlib
from collections import OrderedDict

import torch


class ParameterEMA:
    """Exponential moving average of a network's trainable parameters.

    BasicSR keeps a second network; ours would drag the shared frozen CLIP along (archs hold it
    outside their module tree, so ``deepcopy`` copies it, and fine-tuned CLIP parts are reached
    through it). We keep the averaged tensors only and swap them into the network for validation
    and for the ``params_ema`` state dict. ema = decay * ema + (1 - decay) * param, per step.
    """

    def __init__(self, net, decay):
        if not 0 <= decay < 1:
            raise ValueError(f'train.ema_decay must be in [0, 1), got {decay}')
        self.decay = float(decay)
        self.shadow = OrderedDict((n, p.detach().clone()) for n, p in net.named_parameters() if p.requires_grad)

    @torch.no_grad()
    def update(self, net):
        for name, param in net.named_parameters():
            if name in self.shadow:
                self.shadow[name].mul_(self.decay).add_(param.detach(), alpha=1 - self.decay)

    def state_dict(self, net):
        """``net.state_dict()`` with the averaged parameters in place of the trained ones (CPU)."""
        return OrderedDict((k, self.shadow.get(k, v).detach().cpu().clone()) for k, v in net.state_dict().items())

    def load_state_dict(self, state):
        missing = [n for n in self.shadow if n not in state]
        if missing:
            raise KeyError(f'params_ema lacks {missing[:5]}')
        for name in self.shadow:
            self.shadow[name].copy_(state[name])

    @contextlib.contextmanager
    def applied(self, net):
        """Within the block, ``net`` computes with the averaged parameters."""
        params = dict(net.named_parameters())
        saved = {n: params[n].detach().clone() for n in self.shadow}
        with torch.no_grad():
            for n, value in self.shadow.items():
                params[n].copy_(value)
        try:
            yield net
        finally:
            with torch.no_grad():
                for n, value in saved.items():
                    params[n].copy_(value)
