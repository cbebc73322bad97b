"""Why CLIP could not be loaded, worded for each interface (command-line flags or option-file keys)."""


class ClipLoadError(RuntimeError):
    """CLIP could not be built or its weights could not be loaded.

    Carries its parts so that each interface words the hint in its own terms:
    ``problem`` (what went wrong), ``option`` (the option to change: 'clip_model',
    'clip_pretrained' or 'quick_gelu') and ``hint`` (a sentence with an ``{option}``
    placeholder). ``message(names)`` joins them, naming the option as the user writes it:
    ``CLI_OPTION_NAMES`` for the commands, ``yaml_option_names()`` for option files.
    ``str()`` uses the Python keyword names.
    """

    def __init__(self, problem, option=None, hint=None):
        self.problem, self.option, self.hint = problem, option, hint
        super().__init__(self.message())

    def message(self, names=None):
        if not self.hint:
            return self.problem
        name = (names or {}).get(self.option, self.option)
        return f'{self.problem} {self.hint.format(option=name)}'


CLI_OPTION_NAMES = {'clip_model': '--clip-model', 'clip_pretrained': '--clip-pretrained',
                    'quick_gelu': '--quick-gelu / --no-quick-gelu'}


def yaml_option_names(section='network_g'):
    """How an option file names the CLIP options: ``network_g.clip_pretrained`` ..."""
    return {k: f'{section}.{k}' for k in ('clip_model', 'clip_pretrained', 'quick_gelu')}


#: how to get past a download that cannot happen
LOCAL_FILE_HINT = ('Pass a local weight file as {option} instead (an OpenAI TorchScript archive such as RN50.pt, '
                   'an OpenAI-format state dict or an open_clip checkpoint).')

