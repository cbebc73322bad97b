"""Train an IQA model from an option YAML on BasicSR's runner.

    python uiqa_plugin/train.py -opt options/uiqa_koniq.yml
    python -m torch.distributed.run --nproc_per_node=2 uiqa_plugin/train.py -opt options/uiqa_koniq.yml
    python uiqa_plugin/train.py -opt options/uiqa_koniq.yml --auto_resume

Experiments land under the current working directory (experiments/<name>, tb_logger/<name>).
"""
import os
import sys

if __package__ in (None, ''):
    # Run as a script: import the package from this checkout, and keep the package folder itself off
    # sys.path so that its modules (data, models, test...) cannot shadow top-level ones.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    import uiqa_plugin  # noqa: F401  (basicsr compatibility + registrations)
    from uiqa_plugin.options import validate_option_file
    from uiqa_plugin.runner import launcher_args, patch_basicsr

    argv = launcher_args(sys.argv[1:] if argv is None else list(argv))
    validate_option_file(argv, is_train=True)
    patch_basicsr()
    from basicsr.train import train_pipeline
    sys.argv = [sys.argv[0]] + argv
    train_pipeline(os.getcwd())


if __name__ == '__main__':
    main()
