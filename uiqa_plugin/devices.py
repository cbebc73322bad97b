"""Which device a computation runs on: the default, a checked user choice, the training device.

torch is imported inside the functions: the option checks that use ``check_device`` run before
anything heavy is imported (``--help`` and option errors answer without loading torch).
"""
from uiqa_plugin.option_error import OptionError


def default_device():
    """'cuda' when torch sees a GPU, else 'cpu'."""
    import torch
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def current_device():
    """The device this process trains on: 'cuda:<its GPU>' (set from LOCAL_RANK) or 'cpu'."""
    import torch
    return f'cuda:{torch.cuda.current_device()}' if torch.cuda.is_available() else 'cpu'


def check_device(device, key='--device'):
    """``device`` if this machine has it; OptionError naming ``key`` otherwise (e.g. cuda without a GPU)."""
    import torch
    text = str(device)
    if text.startswith('cuda'):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(text.split(':', 1)[1]) if ':' in text and text.split(':', 1)[1].isdigit() else 0
        if count == 0:
            raise OptionError(f'{key}: {text} asked for, but this machine has no CUDA GPU usable by torch '
                              f'(torch {torch.__version__}); use cpu')
        if index >= count:
            raise OptionError(f'{key}: {text} asked for, but this machine has {count} CUDA GPU(s) (0..{count - 1})')
    else:
        try:
            torch.device(text)
        except (RuntimeError, TypeError) as exc:
            raise OptionError(f'{key}: {text!r} is not a device ({exc}); use cpu, cuda or cuda:N') from None
    return text
