"""Evaluate an IQA model (zero-shot or a trained checkpoint) from an option YAML on BasicSR's runner.

    python uiqa_plugin/test.py -opt options/test_clipiqa_koniq.yml

Writes dataset-level metrics to the log and predictions to results/<name>/.
"""
import os
import sys

if __package__ in (None, ''):  # see train.py
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    import uiqa_plugin  # noqa: F401
    from uiqa_plugin.options import validate_option_file
    from uiqa_plugin.runner import launcher_args, patch_basicsr

    argv = launcher_args(sys.argv[1:] if argv is None else list(argv))
    validate_option_file(argv, is_train=False)
    patch_basicsr()
    from basicsr.test import test_pipeline
    sys.argv = [sys.argv[0]] + argv
    test_pipeline(os.getcwd())


if __name__ == '__main__':
    main()
