"""The double-normalization check of the options sees through user archs that forward **kwargs."""
from test_option_validation import problems


def test_double_normalization_check_follows_kwargs_of_a_user_subclass():
    """A user arch that forwards **kwargs to CLIPIQA takes [0, 1] images as CLIPIQA does: over a normalizing
    dataset it would normalize twice (the check read only the subclass's own signature and let it pass)."""
    from basicsr.utils.registry import ARCH_REGISTRY

    from uiqa_plugin.archs.clipiqa_arch import CLIPIQA
    if 'ForwardingCLIPIQA' not in ARCH_REGISTRY:
        @ARCH_REGISTRY.register()
        class ForwardingCLIPIQA(CLIPIQA):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
    found = problems({'network_g': {'type': 'ForwardingCLIPIQA'}}, is_train=False, removals=['train'])
    assert len(found) == 2 and all('ForwardingCLIPIQA takes RGB in [0, 1]' in p and 'normalized twice' in p
                                   for p in found)
    assert problems({'network_g': {'type': 'ForwardingCLIPIQA', 'input_normalized': True}}, is_train=False,
                    removals=['train']) == []
