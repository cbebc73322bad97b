"""uiqa-score: zero-shot CLIP-IQA scores of image files for any attributes.

    uiqa-score photos/ --attributes quality,look,feel --out scores.csv
"""
import argparse
import functools
import os
import os.path as osp
import sys
import uuid
import warnings

from tqdm import tqdm

from uiqa_plugin.options import OptionError, check_device
from uiqa_plugin.perception.score_tables import mark_random_weights
from uiqa_plugin.prompts import list_attributes, list_presets, resolve_attributes
from uiqa_plugin.scoring import MAX_PIXELS, default_workers
from uiqa_plugin.scoring.table import OutputError, check_output_path, format_table, missing_folder, printable
from uiqa_plugin.user_modules import UserModuleError, import_user_modules

# What needs torch, BasicSR or open_clip is imported inside the functions that use it, and only once the
# options are known to be good: --help, --list-attributes and option errors answer in a fraction of a
# second instead of the seconds those imports take.


def add_clip_arguments(parser):
    """The CLIP options shared by every uiqa command."""
    parser.add_argument('--clip-model', default='RN50', help='open_clip model name or JSON config')
    parser.add_argument('--clip-pretrained', default='openai',
                        help="open_clip tag ('openai', downloaded once), a local weight file "
                             "(OpenAI .pt/state dict or open_clip checkpoint), or 'none' for random weights")
    parser.add_argument('--quick-gelu', action=argparse.BooleanOptionalAction, default=None,
                        help="force CLIP's MLP activation; without either flag it is picked from the weights "
                             "(QuickGELU for OpenAI's and every RN50 weight set) and logged")
    parser.add_argument('--precision', choices=('fp32', 'fp32-fused', 'bf16', 'fp16'), default=None,
                        help="image tower arithmetic: fp32 is the reference computation; fp32-fused folds the "
                             'ResNet trunk (same float32 type, another operation order); bf16 is fastest on CPUs '
                             'with bf16 units and GPUs; fp16 on CUDA only (measured deviations: README, '
                             '"Speed and precision"; default: fp32, or what a --checkpoint recorded)')
    parser.add_argument('--device', default=None, help='cpu, cuda, cuda:1 ... (default: cuda if available)')
    parser.add_argument('--batch-size', type=int, default=1,
                        help='images per forward pass (equal sizes batch together)')


EPILOG = """examples:
  uiqa-score photos/ -a quality,look,feel --out scores.csv
  uiqa-score photos/ --checkpoint net_g_best.pth --clip-pretrained RN50.pt --out scores.json
  uiqa-score photos/ --out scores.csv --resume          # finish an interrupted run
  python -m torch.distributed.run --nproc_per_node=4 -m uiqa_plugin.tools.score photos/ --out scores.csv

exit status: 0 every input scored; 1 some inputs were not scored (each named on stderr, the
others written) or the table could not be written; 2 bad options, output path or model.
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows a default only where it says something and the help text does not already."""

    def _get_help_string(self, action):
        text = action.help or ''
        if 'default' in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f'{text} (default: {action.default})'


def build_parser():
    parser = argparse.ArgumentParser(prog='uiqa-score', description=__doc__.split('\n')[0], epilog=EPILOG,
                                     formatter_class=HelpFormatter)
    parser.add_argument('inputs', nargs='+', help='image files, folders (recursive, links followed once) '
                                                  'or glob patterns')
    parser.add_argument('--attributes', '-a', default=None,
                        help="comma-separated attribute names, presets (look, feel, feel_extra, pyiqa) "
                             "or 'positive|negative' pairs (default: quality; not with --checkpoint)")
    add_clip_arguments(parser)
    parser.add_argument('--workers', type=int, default=default_workers(),
                        help='processes that decode images while the model runs; 0: decode in this process '
                             f'(default: min(4, CPUs) = {default_workers()})')
    parser.add_argument('--keep-pos-embed', action='store_true',
                        help="keep CLIP's positional embedding, interpolated in 2-D to each image's size "
                             '(default: removed, as CLIP-IQA does)')
    parser.add_argument('--checkpoint', default=None,
                        help='score with a trained model (CLIP-IQA+ / CLIP-UIQA checkpoint) instead of zero-shot '
                             'attributes; CLIP comes from --clip-model/--clip-pretrained when given')
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='allow a --checkpoint file that needs full unpickling (it can run code: only for a '
                             'file you trust; our checkpoints never need it)')
    parser.add_argument('--import', dest='imports', action='append', default=[], metavar='MODULE',
                        help='import a module (my_pkg.my_arch or a .py file) that registers your own arch first')
    parser.add_argument('--out', '-o', default=None,
                        help='write a .csv or .json table, streamed while scoring (default: print a table)')
    parser.add_argument('--resume', action='store_true',
                        help='score only the images that --out (and part files of an interrupted run) '
                             'do not hold yet, and keep their rows')
    add_input_arguments(parser)
    parser.add_argument('--strict', action='store_true', help='stop at the first unreadable file')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    parser.add_argument('--list-attributes', action='store_true', help='print the known attributes and exit')
    return parser


def add_input_arguments(parser):
    """How image files become model input, and what happens to images that cannot be scored."""
    parser.add_argument('--max-megapixels', type=float, default=MAX_PIXELS / 1e6,
                        help='refuse images with more pixels than this before decoding them (one row each, '
                             'named on stderr); a large JPEG that the model resizes anyway is decoded reduced '
                             f'instead (default: {MAX_PIXELS / 1e6:g}; RN50 holds 96 bytes per input pixel at full '
                             'resolution; 0: no limit)')
    parser.add_argument('--retry-failed', action='store_true',
                        help='with --resume: score again the images an earlier run could not score (by default '
                             'they are skipped, as recorded in OUT.run.json)')
    parser.add_argument('--crop-border', type=int, default=0, metavar='N',
                        help="remove N pixels from each edge before scoring, as BasicSR's metrics and "
                             "calculate_clipiqa's crop_border do (e.g. the scale of a super-resolution model)")
    parser.add_argument('--y-channel', action='store_true',
                        help="score the BT.601 luma Y replicated to three channels, as calculate_clipiqa's "
                             'test_y_channel does')


def input_preparation(args):
    """The per-image conversion that --crop-border / --y-channel ask for (calculate_clipiqa's own), or None.

    It takes the RGB float image in [0, 1] that plain scoring gives the model (alpha composited, any
    bit depth scaled): an 8-bit RGB file gets exactly the numbers calculate_clipiqa gives its array.
    """
    if not args.crop_border and not args.y_channel:
        return None
    from uiqa_plugin.metrics.clipiqa_metric import image_to_rgb  # lazy: imports basicsr
    return functools.partial(image_to_rgb, crop_border=args.crop_border, test_y_channel=args.y_channel,
                             channel_order='RGB', max_value=1.0)  # BasicSR's arrays are BGR in [0, 255]


def print_attributes():
    for name, attr in list_attributes().items():
        pairs = '; '.join(f'{p!r} / {n!r}' for p, n in attr.pairs)
        print(f'{name:14s} [{attr.group}] {pairs}  ({attr.description})')
    for name, members in list_presets().items():
        print(f'preset {name}: {", ".join(members)}')


def say(message):
    print(printable(f'uiqa-score: {message}'), file=sys.stderr)


def usage_problem(args, world):
    """The first problem with the options that needs no model, or None (``world``: processes in the run)."""
    if args.batch_size < 1:
        return '--batch-size must be at least 1'
    if args.workers < 0:
        return '--workers must be 0 or more'
    if args.checkpoint and args.attributes is not None:
        return ('-a/--attributes does not apply to --checkpoint: a trained model scores what it was trained on; '
                'drop -a, or drop --checkpoint to score zero-shot attributes')
    if args.checkpoint and args.keep_pos_embed:
        return ('--keep-pos-embed does not apply to --checkpoint: the checkpoint says whether its model keeps '
                "CLIP's positional embedding")
    if args.attributes is not None and not args.checkpoint:
        try:
            resolve_attributes(args.attributes)  # names only: no model needed to say that one is unknown
        except (KeyError, ValueError) as exc:
            return exc.args[0] if exc.args else str(exc)
    if args.resume and not args.out:
        return '--resume needs --out: the table to complete'
    if args.retry_failed and not args.resume:
        return '--retry-failed needs --resume: it scores again the images an earlier run of --out could not score'
    if args.max_megapixels < 0:
        return '--max-megapixels must be 0 (no limit) or more'
    if args.crop_border < 0:
        return '--crop-border must be 0 or more'
    if world > 1 and not args.out:
        return f'a run over {world} processes needs --out: the table the ranks write together'
    return None


def load_model(args, argv, device):
    from uiqa_plugin.api import create_metric, load_trained_model
    from uiqa_plugin.clip.pretrained import trusting
    with warnings.catch_warnings(), trusting(args.trust_checkpoint):  # also for a --clip-pretrained archive
        # a random CLIP is said in plain words after loading (see main), not as a warning with a source line
        warnings.filterwarnings('ignore', message='.*RANDOM weights.*')
        warnings.simplefilter('default')
        if args.checkpoint:
            explicit = {a.split('=')[0] for a in (argv if argv is not None else sys.argv[1:])}
            return load_trained_model(
                args.checkpoint, device=device,
                clip_model=args.clip_model if '--clip-model' in explicit else None,
                clip_pretrained=args.clip_pretrained if '--clip-pretrained' in explicit else None,
                quick_gelu=args.quick_gelu, trust=args.trust_checkpoint, precision=args.precision)
        return create_metric(args.attributes or 'quality', clip_model=args.clip_model,
                             clip_pretrained=args.clip_pretrained, device=device, keep_pos_embed=args.keep_pos_embed,
                             quick_gelu=args.quick_gelu, precision=args.precision or 'fp32')


def rank_device(args, ranks):
    """--device, or this rank's GPU (LOCAL_RANK) when several processes share a machine."""
    import torch
    if ranks.world > 1 and torch.cuda.is_available() and args.device in (None, 'cuda'):
        return f'cuda:{ranks.local_rank}'
    return args.device


def report_failures(failures, scored):
    for path, message in failures:
        say(message if message.startswith(path) else f'{path}: {message}')
    if failures:
        say(f'{len(failures)} input(s) not scored, {scored} scored')
        return 1
    return 0


def max_pixels(args):
    return int(args.max_megapixels * 1e6) or None


def run_record(args, metric):
    """What makes this run's numbers (see ``scoring.provenance``), recorded with its rows."""
    from uiqa_plugin.scoring.provenance import describe_file, describe_model
    return describe_model(metric, checkpoint=describe_file(args.checkpoint), crop_border=args.crop_border,
                          y_channel=args.y_channel)


def score_to_table(args, metric):
    """No --out, one process: score everything, then print the table."""
    from uiqa_plugin.api import score_paths
    try:
        result = score_paths(metric, args.inputs, batch_size=args.batch_size, strict=args.strict,
                             progress=not args.no_progress, workers=args.workers, max_pixels=max_pixels(args),
                             prepare=input_preparation(args))
    except (OSError, ValueError) as exc:
        say(exc)
        return 1
    print(printable(format_table(result.rows, ['path'] + list(result.attribute_names))))
    return report_failures(result.failures, len(result.rows))


def nothing_to_score(args):
    """Before CLIP loads: say so when the inputs hold no image at all (no table is written then)."""
    from uiqa_plugin.scoring.paths import collect_image_paths
    paths, problems = collect_image_paths(args.inputs)
    if paths:
        return False
    for path, message in problems:
        say(f'{path}: {message}')
    say('nothing to score: no image file among the inputs' + (f'; {args.out} not written' if args.out else ''))
    return True


def plan(args, names, table_names, made_by):
    """Rank 0: {paths to score, all paths, problems, earlier rows and failures, earlier part files} or
    (exit code, message). Images are matched by real path: ``./photos/`` resumes ``photos``.
    names: the model's scores (the columns of part files); table_names: the table's columns."""
    from uiqa_plugin.scoring.outputs import leftover_parts, previous_rows
    from uiqa_plugin.scoring.paths import collect_image_paths
    paths, problems = collect_image_paths(args.inputs)
    if args.strict and problems:
        return 1, '; '.join(f'{p}: {m}' for p, m in problems)
    earlier, earlier_failures, old_parts = [], [], leftover_parts(args.out)
    if args.resume:
        try:
            earlier, earlier_failures = previous_rows(args.out, names, made_by, table_names)
        except OutputError as exc:
            return 2, str(exc)
    elif old_parts:
        say(f'{len(old_parts)} part file(s) of an unfinished run next to {args.out} are left as they are; '
            'add --resume to continue that run instead')
        old_parts = []
    done = {osp.realpath(row['path']) for row in earlier}
    failed = {osp.realpath(path) for path, _ in earlier_failures} - done
    skip = done if args.retry_failed else done | failed
    todo = [p for p in paths if osp.realpath(p) not in skip]
    if args.resume:
        scored = sum(osp.realpath(p) in done for p in paths)
        say(f'resuming: {scored} of {len(paths)} images already scored')
        retried = sum(osp.realpath(p) in failed for p in paths)
        if retried and args.retry_failed:
            say(f'{retried} image(s) that could not be scored before are tried again')
        elif retried:  # reported again at the end, so that the exit status says the table is incomplete
            say(f'{retried} image(s) could not be scored before and are skipped (--retry-failed tries them again)')
            problems = list(problems) + [(p, m) for p, m in earlier_failures if osp.realpath(p) in failed]
    return {'todo': todo, 'paths': paths, 'problems': problems, 'earlier': earlier,
            'earlier_failures': earlier_failures, 'old_parts': old_parts}


def score_streamed(args, metric, ranks, random_weights=None):
    """--out: every rank streams its shard to a part file; rank 0 merges them into the table (with a
    ``random_weights`` column when ``random_weights`` gives the reason)."""
    from uiqa_plugin.api import output_names
    from uiqa_plugin.scoring.outputs import OutputLock
    names = output_names(metric)
    table_names = mark_random_weights([], names, random_weights)[1]  # the columns of the table on disk
    made_by = run_record(args, metric)
    job, lock = None, None
    if ranks.is_main:  # rank 0 plans, merges and removes part files: it holds the table's lock throughout
        try:
            lock = OutputLock(args.out).acquire()
            job = plan(args, names, table_names, made_by)
        except OutputError as exc:  # another run writes this table
            job = (2, str(exc))
    try:
        return _score_planned(args, metric, ranks, names, table_names, made_by, job, random_weights)
    finally:
        if lock is not None:
            lock.release()


def _score_planned(args, metric, ranks, names, table_names, made_by, job, random_weights):
    """Score rank 0's plan ``job`` (a dict, or (exit code, message) to stop every rank), merge on rank 0."""
    from uiqa_plugin.data.image_io import ImageReadError
    from uiqa_plugin.scoring.loader import iter_scores
    from uiqa_plugin.scoring.outputs import PartWriter, merge_rows, part_path, write_merged
    # the other ranks need only the paths to score and the job's name (or rank 0's reason to stop)
    shared = ranks.share(job if isinstance(job, tuple) else (job['todo'], uuid.uuid4().hex[:8]) if job else None)
    if isinstance(shared[0], int):  # every rank stops with rank 0's message
        say(shared[1])
        return shared[0]
    todo, job_id = shared
    shard = ranks.shard(todo)
    part = part_path(args.out, job_id, ranks.rank)
    try:
        with PartWriter(part, names, made_by) as writer, \
                tqdm(total=len(shard), desc='scoring', unit='img',
                     disable=args.no_progress or not ranks.is_main) as bar:
            for index, scores, error in iter_scores(metric, shard, batch_size=args.batch_size,
                                                    workers=min(args.workers, len(shard) // 2), progress=bar,
                                                    max_pixels=max_pixels(args), prepare=input_preparation(args)):
                writer.write(shard[index], scores, error)
                if error is not None and args.strict:
                    raise ImageReadError(error)
    except (OutputError, ImageReadError) as exc:
        say(exc)
        say(f'stopped; the rows scored so far are in {part}: rerun with --resume to continue')
        return 1
    ranks.wait_all()
    if not ranks.is_main:
        return 0
    parts = [part_path(args.out, job_id, r) for r in range(ranks.world)]
    missing = [p for p in parts if not os.path.exists(p)]
    if missing:  # ranks on other machines wrote them to their own disks
        say(f'rank 0 cannot see the part files {", ".join(missing)}: --out must be on a file system that every '
            f'machine shares; copy them next to {args.out} and rerun with --resume to merge them')
        return 1
    try:
        rows, failures, failed = merge_rows(job['paths'], names, job['earlier'], parts, job['earlier_failures'])
    except OutputError as exc:  # a part file damaged by something else than a kill
        say(exc)
        return 1
    try:
        write_merged(args.out, mark_random_weights(rows, names, random_weights)[0], table_names,
                     parts + job['old_parts'], made_by, failed)
    except OutputError as exc:
        say(exc)
        if not any(os.path.exists(p) for p in parts):  # the folder itself went away: the rows go to stdout
            print(printable(format_table(rows, ['path'] + names)))
        return 1
    say(f'wrote {len(rows)} row{"s" if len(rows) != 1 else ""} to {args.out}')
    return report_failures(list(job['problems']) + failures, len(rows))


def main(argv=None):
    if argv is None and '--list-attributes' in sys.argv[1:]:
        print_attributes()
        return 0
    args = build_parser().parse_args(argv)
    if args.list_attributes:
        print_attributes()
        return 0
    try:
        import_user_modules(args.imports)
        if args.device:
            check_device(args.device, '--device')
    except (OptionError, UserModuleError) as exc:
        say(str(exc))
        return 2
    problem = usage_problem(args, int(os.environ.get('WORLD_SIZE', 1)))  # the launcher's count, as Ranks reads it
    if problem:
        say(problem)
        return 2
    if nothing_to_score(args):
        return 1
    if args.out:
        if missing_folder(args.out):
            say(f'creating folder {missing_folder(args.out)} for --out')
        try:
            check_output_path(args.out)
        except OutputError as exc:
            say(exc)
            return 2
    from uiqa_plugin.clip.errors import CLI_OPTION_NAMES, ClipLoadError
    from uiqa_plugin.perception.profile import model_random_weights_reason
    from uiqa_plugin.scoring.distributed import Ranks
    ranks = Ranks()
    try:
        metric = load_model(args, argv, rank_device(args, ranks))
    except ClipLoadError as exc:
        say(exc.message(CLI_OPTION_NAMES))
        return 2
    except (KeyError, ValueError) as exc:  # unreadable, refused or non-finite weights, unknown attributes
        say(exc)
        return 2
    random_weights = model_random_weights_reason(metric)
    if random_weights and ranks.is_main:
        say(f'note: {random_weights}' + (' The table says so in its random_weights column.' if args.out else ''))
    if not args.out:
        return score_to_table(args, metric)
    ranks.start()
    try:
        return score_streamed(args, metric, ranks, random_weights)
    finally:
        ranks.close()


if __name__ == '__main__':
    sys.exit(main())
