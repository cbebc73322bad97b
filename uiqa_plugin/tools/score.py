"""uiqa-score: zero-shot CLIP-IQA scores of image files for any attributes.

    uiqa-score photos/ --attributes quality,look,feel --out scores.csv
"""
import argparse
import sys
import warnings

from uiqa_plugin.tools.output_table import format_table, write_table


def add_clip_arguments(parser):
    """The CLIP options shared by every uiqa command."""
    parser.add_argument('--clip-model', default='RN50', help='open_clip model name or JSON config (default RN50)')
    parser.add_argument('--clip-pretrained', default='openai',
                        help="open_clip tag ('openai', downloaded once), a local weight file "
                             "(OpenAI .pt/state dict or open_clip checkpoint), or 'none' for random weights")
    parser.add_argument('--quick-gelu', action=argparse.BooleanOptionalAction, default=None,
                        help="force CLIP's MLP activation; without either flag it is picked from the weights "
                             "(QuickGELU for OpenAI's and every RN50 weight set) and logged")
    parser.add_argument('--device', default=None, help='cpu, cuda, cuda:1 ... (default: cuda if available)')
    parser.add_argument('--batch-size', type=int, default=1, help='images per forward pass (equal sizes batch together)')


def build_parser():
    parser = argparse.ArgumentParser(prog='uiqa-score', description=__doc__.split('\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('inputs', nargs='+', help='image files, folders (recursive) or glob patterns')
    parser.add_argument('--attributes', '-a', default='quality',
                        help="comma-separated attribute names, presets (look, feel, feel_extra, pyiqa) "
                             "or 'positive|negative' pairs")
    add_clip_arguments(parser)
    parser.add_argument('--keep-pos-embed', action='store_true',
                        help="keep CLIP's positional embedding, interpolated in 2-D to each image's size "
                             '(default: removed, as CLIP-IQA does)')
    parser.add_argument('--checkpoint', default=None,
                        help='score with a trained model (CLIP-IQA+ / CLIP-UIQA checkpoint) instead of zero-shot '
                             'attributes; CLIP comes from --clip-model/--clip-pretrained when given')
    parser.add_argument('--out', '-o', default=None, help='write a .csv or .json table (default: print a table)')
    parser.add_argument('--strict', action='store_true', help='stop at the first unreadable file')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    parser.add_argument('--list-attributes', action='store_true', help='print the known attributes and exit')
    return parser


def print_attributes():
    from uiqa_plugin.prompts import list_attributes, list_presets
    for name, attr in list_attributes().items():
        pairs = '; '.join(f'{p!r} / {n!r}' for p, n in attr.pairs)
        print(f'{name:14s} [{attr.group}] {pairs}  ({attr.description})')
    for name, members in list_presets().items():
        print(f'preset {name}: {", ".join(members)}')


def main(argv=None):
    if argv is None and '--list-attributes' in sys.argv[1:]:
        print_attributes()
        return 0
    args = build_parser().parse_args(argv)
    if args.list_attributes:
        print_attributes()
        return 0
    if args.batch_size < 1:
        print('uiqa-score: --batch-size must be at least 1', file=sys.stderr)
        return 2
    import uiqa_plugin
    from uiqa_plugin.clip_backbone import CLI_OPTION_NAMES, ClipLoadError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('default')
            if args.checkpoint:
                from uiqa_plugin.api import load_trained_model
                explicit = {a.split('=')[0] for a in (argv if argv is not None else sys.argv[1:])}
                metric = load_trained_model(
                    args.checkpoint, device=args.device,
                    clip_model=args.clip_model if '--clip-model' in explicit else None,
                    clip_pretrained=args.clip_pretrained if '--clip-pretrained' in explicit else None,
                    quick_gelu=args.quick_gelu)
            else:
                metric = uiqa_plugin.create_metric(args.attributes, clip_model=args.clip_model,
                                                   clip_pretrained=args.clip_pretrained, device=args.device,
                                                   keep_pos_embed=args.keep_pos_embed, quick_gelu=args.quick_gelu)
    except ClipLoadError as exc:
        print(f'uiqa-score: {exc.message(CLI_OPTION_NAMES)}', file=sys.stderr)
        return 2
    except (KeyError, ValueError) as exc:
        print(f'uiqa-score: {exc.args[0] if exc.args else exc}', file=sys.stderr)
        return 2
    try:
        result = uiqa_plugin.score_paths(metric, args.inputs, batch_size=args.batch_size, strict=args.strict,
                                         progress=not args.no_progress)
    except (OSError, ValueError) as exc:
        print(f'uiqa-score: {exc}', file=sys.stderr)
        return 1
    columns = ['path'] + list(result.attribute_names)
    if args.out:
        write_table(result.rows, columns, args.out)
        print(f'uiqa-score: wrote {len(result.rows)} rows to {args.out}', file=sys.stderr)
    else:
        print(format_table(result.rows, columns))
    for path, message in result.failures:
        detail = message if message.startswith(path) else f'{path}: {message}'
        print(f'uiqa-score: skipped {detail}', file=sys.stderr)
    if result.failures:
        print(f'uiqa-score: {len(result.failures)} input(s) failed, {len(result.rows)} scored', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
