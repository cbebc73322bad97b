"""uiqa-profile: how images feel to CLIP, as tables, radar charts, HTML reports, agreement with human
ratings and prompt-phrasing sensitivity.

    uiqa-profile profile photos/ -a feel --out feel.csv --radar-dir charts/
    uiqa-profile radar photos/ -a feel,look --out-dir charts/ [--overlay all]
    uiqa-profile radar --table paper.csv --table ensemble.csv --out-dir compare/
    uiqa-profile report photos/ -a feel@ensemble --out report.html [--images link]
    uiqa-profile evaluate ratings.csv photos/ --map aesthetics=aesthetic --out agreement.csv --chart agreement.png
    uiqa-profile sensitivity photos/ -a feel
    uiqa-profile phrasings -a feel

Attributes: names, presets (look, feel, feel_extra, pyiqa), 'positive|negative' pairs, prompt
ensembles (happy@ensemble, feel@ensemble, look@ensemble, ensemble) and your own attributes with
several phrasings from --attributes-file (JSON/YAML: {"cosy": ["Cosy photo.|Bleak photo.", ...]}).
"""
import argparse
import os
import os.path as osp
import sys
import warnings

from uiqa_plugin.perception.ensembles import ENSEMBLE_PHRASINGS, base_name, load_attribute_file, with_ensembles
from uiqa_plugin.perception.radar import radar_chart, save_chart, thumbnail
from uiqa_plugin.perception.report import write_report
from uiqa_plugin.perception.score_tables import (RANDOM_WEIGHTS_CAPTION, chart_stems, join_score_tables,
                                                 mark_random_weights, read_score_table, table_random_weights_reason)
from uiqa_plugin.prompts import get_attribute, resolve_attributes
from uiqa_plugin.scoring.table import OutputError, check_output_path, format_table, missing_folder, write_table
from uiqa_plugin.terminal import printable
from uiqa_plugin.tools.score import add_clip_arguments

# What needs torch (scoring, image decoding, ratings matched to files) is imported inside the commands
# that use it: --help, option errors, `phrasings` and charts or reports of saved tables answer without
# loading torch, open_clip or BasicSR (seconds).

PROG = 'uiqa-profile'


class CommandError(Exception):
    """A problem to report on one line and exit with ``code``."""

    def __init__(self, message, code=2):
        super().__init__(message)
        self.code = code


def _say(command, message):
    print(printable(f'{PROG} {command}: {message}'), file=sys.stderr)  # file names may hold terminal escapes


def error_message(exc):
    """One line for an exception. An OSError raised by the system carries (errno, strerror,
    filename) in its args, so args[0] would be a bare number such as 13: name the file and reason."""
    if isinstance(exc, OSError) and exc.strerror:
        return f'{exc.filename}: {exc.strerror}' if exc.filename is not None else exc.strerror
    return str(exc) or type(exc).__name__


# ----------------------------------------------------------------------------- shared argument groups

def _add_attribute_arguments(parser, default='feel'):
    parser.add_argument('--attributes', '-a', default=default,
                        help='comma-separated attribute names, presets, "positive|negative" pairs or '
                             'ensembles (happy@ensemble, feel@ensemble, ensemble)')
    parser.add_argument('--attributes-file', default=None,
                        help='JSON/YAML file of your own attributes: {name: ["pos|neg", ...]} (several '
                             'phrasings are averaged)')
    parser.add_argument('--ensemble-mode', choices=('mean_prob', 'mean_logit'), default='mean_prob',
                        help='how the phrasings of one attribute combine')


def _add_scoring_arguments(parser, inputs_required=True, attributes_default='feel'):
    parser.add_argument('inputs', nargs='+' if inputs_required else '*',
                        help='image files, folders (recursive) or glob patterns')
    _add_attribute_arguments(parser, attributes_default)
    add_clip_arguments(parser)
    parser.add_argument('--strict', action='store_true', help='stop at the first unreadable file')
    parser.add_argument('--no-progress', action='store_true', help='hide progress bars')


def _formats(text):
    formats = [f.strip().lower() for f in text.split(',') if f.strip()]
    bad = [f for f in formats if f not in ('png', 'svg', 'pdf')]
    if bad or not formats:
        raise argparse.ArgumentTypeError(f'chart formats are png, svg, pdf (comma-separated), got {text!r}')
    return formats


def _resolve(args):
    """The attributes asked for (Attribute objects), after loading --attributes-file."""
    if getattr(args, 'attributes_file', None):
        load_attribute_file(args.attributes_file)
    return resolve_attributes(args.attributes)


def _build_metric(args, attributes, command):
    from uiqa_plugin.api import create_metric
    with warnings.catch_warnings():
        _random_weights_note(args, command)
        return create_metric(attributes, clip_model=args.clip_model, clip_pretrained=_pretrained(args.clip_pretrained),
                             device=args.device, ensemble=args.ensemble_mode, quick_gelu=args.quick_gelu,
                             precision=args.precision or 'fp32')


def _random_weights_note(args, command):
    """Say once, in plain words, that the CLIP weights are random (and silence CLIP's own warning, which
    would print a source line); returns the reason, or None for trained weights. Call inside catch_warnings."""
    from uiqa_plugin.perception.profile import random_weights_reason
    reason = random_weights_reason(_pretrained(args.clip_pretrained))
    warnings.filterwarnings('ignore', message='.*RANDOM weights.*')
    if reason:
        _say(command, f'note: {reason}')
    args.random_weights = reason
    return reason


def _check_outputs(command, tables=(), files=()):
    """Before any work: each output path names a file; a folder that does not exist yet is announced.

    tables: score-table paths, checked as uiqa-score checks --out (a .csv / .json file that can be
    written); files: other outputs (charts, pages), which only must not be folders.
    """
    for path in [p for p in list(tables) + list(files) if p]:
        folder = missing_folder(path)
        if folder and not osp.exists(folder):
            _say(command, f'creating folder {folder} for {osp.basename(path)}')
        if path in tables:
            try:
                check_output_path(path)
            except OutputError as exc:
                raise CommandError(str(exc)) from None
        elif osp.isdir(path):
            raise CommandError(f'{path}: is a folder; name a file in it')


def _pretrained(value):
    return None if value is None or str(value).lower() == 'none' else value


def _score(args, command, extra_scorers=None):
    """Score ``args.inputs``; returns (ScoreResult, attributes). Prints skipped files."""
    from uiqa_plugin.perception.profile import profile_images
    if args.batch_size < 1:
        raise CommandError('--batch-size must be at least 1')
    attributes = _resolve(args)
    metric = _build_metric(args, attributes, command)
    result = profile_images(metric, args.inputs, extra_scorers=extra_scorers, batch_size=args.batch_size,
                            strict=args.strict, progress=not args.no_progress)
    for path, message in result.failures:
        _say(command, f'skipped {message if message.startswith(path) else f"{path}: {message}"}')
    if not result.rows:
        raise CommandError('no image could be scored', code=1)
    return result, attributes


def _write_or_print(command, rows, columns, out, random_weights=None):
    """Write the table (a ``random_weights`` column marks scores of a random CLIP: files travel without the
    note printed on stderr) or print it."""
    if out:
        write_table(*mark_random_weights(rows, columns, random_weights), out)
        _say(command, f'wrote {len(rows)} rows to {out}')
    else:
        print(format_table(rows, columns))


def _radar_caption(reason):
    return RANDOM_WEIGHTS_CAPTION if reason else None


# ----------------------------------------------------------------------------- subcommands

def cmd_profile(args):
    from uiqa_plugin.perception.profile import load_scorer, write_radar_charts
    _check_outputs('profile', tables=[args.out])
    extra = dict(load_scorer(spec, device=args.device) for spec in args.scorer)
    result, _ = _score(args, 'profile', extra_scorers=extra)
    _write_or_print('profile', result.rows, ['path'] + result.attribute_names, args.out, args.random_weights)
    if args.radar_dir:
        files = write_radar_charts(result.rows, result.attribute_names, args.radar_dir, args.radar_format,
                                   progress=not args.no_progress, caption=_radar_caption(args.random_weights),
                                   on_problem=lambda message: _say('profile', message))
        _say('profile', f'wrote {len(files)} chart file(s) to {args.radar_dir}')
    return 1 if result.failures else 0


def _join_tables(command, tables, labels):
    try:
        joined = join_score_tables(tables, labels)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    for note in joined.notes:
        _say(command, note)
    if joined.random_weights:
        _say(command, f'note: {joined.random_weights}')
    return joined


def cmd_radar(args):
    from uiqa_plugin.data.image_io import ImageReadError, read_image
    from uiqa_plugin.perception.profile import write_radar_charts
    if bool(args.table) == bool(args.inputs):
        raise CommandError('give either images to score or --table score tables (not both)')
    written = []
    if args.table:
        joined = _join_tables('radar', args.table, args.label)
        if not joined.by_path:
            raise CommandError('no image is in every table', code=1)
        for path, stem in zip(joined.by_path, chart_stems(list(joined.by_path), args.out_dir)):
            try:
                images = [thumbnail(read_image(path), 384)]
            except ImageReadError:
                images = []  # the table may come from another machine
            series = [(label, [row[c] for c in cols])
                      for label, cols, row in zip(joined.labels, joined.columns, joined.by_path[path])]
            chart = radar_chart(series, joined.names, images=images, title=osp.basename(path),
                                caption=_radar_caption(joined.random_weights))
            written += save_chart(chart.figure, stem, args.format)
        code = 0
    else:
        result, _ = _score(args, 'radar')
        names = result.attribute_names
        caption = _radar_caption(args.random_weights)
        if args.overlay:
            series = [(osp.basename(r['path']), [r[n] for n in names]) for r in result.rows]
            images = [thumbnail(read_image(r['path']), 192) for r in result.rows] if len(series) <= 6 else []
            chart = radar_chart(series, names, images=images, title=args.overlay, caption=caption)
            written += save_chart(chart.figure, osp.join(args.out_dir, args.overlay), args.format)
        else:
            written += write_radar_charts(result.rows, names, args.out_dir, args.format, caption=caption,
                                          progress=not args.no_progress,
                                          on_problem=lambda message: _say('radar', message))
        code = 1 if result.failures else 0
    _say('radar', f'wrote {len(written)} chart file(s) to {args.out_dir}')
    return code


#: above this size, the report suggests --images link (embedded thumbnails cost ~80 KB per image)
LARGE_REPORT_BYTES = 5 << 20


def cmd_report(args):
    if bool(args.table) == bool(args.inputs):
        raise CommandError('give either images to score or --table with a score table (not both)')
    _check_outputs('report', files=[args.out])
    if args.table:
        rows, names = read_score_table(args.table)
        attributes, description, code = None, f'Scores from {args.table}.', 0
        warning = table_random_weights_reason(rows)
    else:
        result, attributes = _score(args, 'report')
        rows, names = result.rows, result.attribute_names
        description = f'CLIP {args.clip_model} ({args.clip_pretrained}), ensemble mode {args.ensemble_mode}.'
        code = 1 if result.failures else 0
        warning = args.random_weights
    write_report(rows, names, args.out, images=args.images, attributes=attributes, chart_format=args.chart,
                 thumb_size=args.thumb_size, title=args.title, description=description,
                 progress=not args.no_progress, warning=warning)
    size = os.path.getsize(args.out)
    _say('report', f'wrote {args.out} ({len(rows)} images, {size / 2**20:.1f} MB)')
    if args.images == 'embed' and size > LARGE_REPORT_BYTES:
        _say('report', f'note: the page embeds every thumbnail and chart ({size / max(len(rows), 1) / 1024:.0f} KB per '
                       'image); --images link keeps it small (the page then needs the image files beside it)')
    return code


def _parse_map(items):
    mapping = {}
    for item in items:
        for part in item.split(','):
            if not part.strip():
                continue
            column, sep, attribute = part.partition('=')
            if not sep or not column.strip() or not attribute.strip():
                raise CommandError(f'--map {part!r} must be COLUMN=ATTRIBUTE (e.g. aesthetics=aesthetic)')
            mapping[column.strip()] = attribute.strip()
    return mapping


def cmd_evaluate(args):
    from uiqa_plugin.perception.agreement import evaluate_ratings, plot_agreement, table_columns
    from uiqa_plugin.perception.ratings import read_ratings
    if args.batch_size < 1:
        raise CommandError('--batch-size must be at least 1')
    if not 0 < args.alpha < 1:
        raise CommandError('--alpha must be in (0, 1)')
    _check_outputs('evaluate', tables=[args.out, args.scores_out], files=[args.chart])
    if args.attributes_file:
        load_attribute_file(args.attributes_file)
    columns = [c.strip() for c in args.columns.split(',') if c.strip()] if args.columns else None
    ratings = read_ratings(args.ratings, image_column=args.image_column, column_map=_parse_map(args.map),
                           columns=columns)
    metric, table = None, None
    if args.scores:  # compare an existing table: no model, no scoring
        table = read_score_table(args.scores)
        reason = table_random_weights_reason(table[0])
        if reason:
            _say('evaluate', f'note: {reason}')
    else:
        attributes = []
        for name in ratings.attribute_names:
            try:
                attributes.append(get_attribute(name))
            except KeyError as exc:
                raise CommandError(f'{args.ratings}: column {ratings.sources[name]!r} is not an attribute '
                                   f'({exc.args[0]}) Map it with --map {ratings.sources[name]}=ATTRIBUTE or leave it '
                                   'out with --columns.') from None
        if args.prompt_set == 'ensemble':
            attributes = with_ensembles(attributes)
        elif args.prompt_set == 'both':  # each paper pair next to its ensemble
            attributes = list(dict.fromkeys(a for pair in zip(attributes, with_ensembles(attributes)) for a in pair))
        with warnings.catch_warnings():
            metric = _build_metric(args, attributes, 'evaluate')
        reason = args.random_weights
    rows, scores, skipped = evaluate_ratings(metric, ratings, args.images, n_boot=args.n_boot, alpha=args.alpha,
                                             seed=args.seed, batch_size=args.batch_size,
                                             progress=not args.no_progress, strict=args.strict, scores=table)
    for entry, reason in skipped:
        _say('evaluate', f'skipped {entry}: {reason}')
    columns = ['attribute', 'column'] + table_columns(with_intervals=args.n_boot > 0)[1:]
    print(format_table(rows, columns, digits=3))  # first, so that a failed write below loses nothing
    if args.out:
        write_table(*mark_random_weights(rows, columns, reason), args.out)
        _say('evaluate', f'wrote {args.out}')
    if args.scores_out:
        names = table[1] if table is not None else metric.attribute_names
        write_table(*mark_random_weights(scores, ['path'] + list(names), reason), args.scores_out)
        _say('evaluate', f'wrote {args.scores_out}')
    if args.chart:
        plot_agreement(rows, args.chart, title=f'Agreement with {osp.basename(args.ratings)}',
                       confidence=1 - args.alpha, caption=RANDOM_WEIGHTS_CAPTION if reason else None)
        _say('evaluate', f'wrote {args.chart}')
    return 1 if skipped else 0


def cmd_sensitivity(args):
    from uiqa_plugin.perception.sensitivity import (phrasing_scores_table, score_phrasings, sensitivity_tables,
                                                    srcc_matrix)
    if args.batch_size < 1:
        raise CommandError('--batch-size must be at least 1')
    _check_outputs('sensitivity', tables=[args.out, args.summary_out, args.scores_out])
    attributes = with_ensembles(_resolve(args))
    single = [a.name for a in attributes if len(a.pairs) < 2]
    if single:
        _say('sensitivity', f'only one phrasing, nothing to compare: {", ".join(single)} '
                            '(give several in --attributes-file)')
    with warnings.catch_warnings():
        reason = _random_weights_note(args, 'sensitivity')
        results, failures = score_phrasings(attributes, args.inputs, clip_model=args.clip_model,
                                            clip_pretrained=_pretrained(args.clip_pretrained), device=args.device,
                                            batch_size=args.batch_size, strict=args.strict,
                                            progress=not args.no_progress, quick_gelu=args.quick_gelu,
                                            precision=args.precision or 'fp32')
    for path, message in failures:
        _say('sensitivity', f'skipped {message if message.startswith(path) else f"{path}: {message}"}')
    if not results or not results[0].paths:
        raise CommandError('no image could be scored', code=1)
    if len(results[0].paths) < 3:
        _say('sensitivity', f'only {len(results[0].paths)} image(s): rank correlations need several')
    per_phrasing, per_attribute = sensitivity_tables(results)
    summary_cols = ['attribute', 'phrasings', 'images', 'mean_srcc', 'min_srcc', 'srcc_paper_ensemble', 'spread']
    phrasing_cols = ['attribute', 'phrasing', 'positive', 'negative', 'mean', 'std', 'srcc_paper', 'srcc_others']
    print('Stability of each attribute across phrasings (SRCC between phrasings over the images):')
    print(format_table(per_attribute, summary_cols, digits=3))
    print()
    print('Each phrasing:')
    print(format_table(per_phrasing, phrasing_cols, digits=3))
    if args.matrix:
        for item in results:
            k = item.scores.shape[1]
            if k < 2:
                continue
            matrix = srcc_matrix(item.scores)
            print(f'\nSRCC between the phrasings of {item.attribute.name} (row/column k = phrasing k):')
            print(format_table([{'k': i, **{str(j): float(matrix[i, j]) for j in range(k)}} for i in range(k)],
                               ['k'] + [str(j) for j in range(k)], digits=3))
    if args.out:
        write_table(*mark_random_weights(per_phrasing, phrasing_cols, reason), args.out)
        _say('sensitivity', f'wrote {args.out}')
    if args.summary_out:
        write_table(*mark_random_weights(per_attribute, summary_cols, reason), args.summary_out)
        _say('sensitivity', f'wrote {args.summary_out}')
    if args.scores_out:
        write_table(*mark_random_weights(*phrasing_scores_table(results), reason), args.scores_out)
        _say('sensitivity', f'wrote {args.scores_out}')
    return 1 if failures else 0


def cmd_phrasings(args):
    attributes = _resolve(args)
    for ens in with_ensembles(attributes):
        print(f'{ens.name}  ({ens.description})')
        curated = ENSEMBLE_PHRASINGS.get(base_name(ens.name), [])
        for k, (pos, neg) in enumerate(ens.pairs):
            paper = k == 0 and curated[:1] == [(pos, neg)]
            print(f'  {k}: {pos!r} / {neg!r}{"   <- paper" if paper else ""}')
    return 0


# ----------------------------------------------------------------------------- parser and entry point

class _DefaultsFormatter(argparse.HelpFormatter):
    """Shows a default only where it says something and the help text does not already."""

    def _get_help_string(self, action):
        text = action.help or ''
        if 'default' in text or action.default in (None, [], False, argparse.SUPPRESS) or not action.option_strings:
            return text
        default = ','.join(action.default) if isinstance(action.default, list) else action.default
        return f'{text} (default: {default})'


def build_parser():
    fmt = _DefaultsFormatter
    summary = ' '.join(__doc__.split('\n\n')[0].split()).split(': ', 1)[1]
    parser = argparse.ArgumentParser(
        prog=PROG, description=summary, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='examples:\n'
               '  uiqa-profile profile photos/ -a feel --out feel.csv --radar-dir charts/\n'
               '  uiqa-profile report photos/ -a feel,look --out report.html\n'
               '  uiqa-profile evaluate ratings.csv photos/ --map aesthetics=aesthetic --out agreement.csv\n'
               '  uiqa-profile sensitivity photos/ -a feel --matrix\n\n'
               'Run "uiqa-profile COMMAND -h" for the options of a command.')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True

    p = sub.add_parser('profile', formatter_class=fmt, help='score attributes of images: a table (+ radar charts)')
    _add_scoring_arguments(p)
    p.add_argument('--out', '-o', default=None, help='write a .csv or .json table (default: print it)')
    p.add_argument('--radar-dir', default=None, help='also write one radar chart per image into this folder')
    p.add_argument('--radar-format', type=_formats, default=['png', 'svg'], help='chart formats, e.g. png,svg')
    p.add_argument('--scorer', action='append', default=[], metavar='NAME=MODULE:FACTORY',
                   help='extra column from another model: FACTORY(device=...) returns a callable mapping '
                        'RGB (N,3,H,W) in [0,1] to (N,) scores (repeatable)')
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser('radar', formatter_class=fmt, help='radar charts, one per image or overlaid')
    _add_scoring_arguments(p, inputs_required=False)
    p.add_argument('--out-dir', required=True, help='folder for the charts')
    p.add_argument('--format', type=_formats, default=['png', 'svg'], help='chart formats, e.g. png,svg')
    p.add_argument('--overlay', default=None, metavar='NAME', help='one chart NAME.png with all images overlaid')
    p.add_argument('--table', action='append', default=[],
                   help='plot scores from a table instead of scoring; several tables (models, prompt sets) '
                        'are overlaid per image (repeatable)')
    p.add_argument('--label', action='append', default=[], help='legend label of each --table (repeatable)')
    p.set_defaults(func=cmd_radar)

    p = sub.add_parser('report', formatter_class=fmt, help='one self-contained HTML page: table + radar charts')
    _add_scoring_arguments(p, inputs_required=False)
    p.add_argument('--out', '-o', required=True, help='the .html file to write')
    p.add_argument('--images', choices=('embed', 'link'), default='embed',
                   help='embed base64 thumbnails (self-contained, ~80 KB per image), or link the files relative to '
                        'the page (small, needs the images beside it)')
    p.add_argument('--chart', choices=('svg', 'png'), default='svg', help='format of the embedded radar charts')
    p.add_argument('--thumb-size', type=int, default=256, help='longer side of embedded thumbnails (pixels)')
    p.add_argument('--title', default='Attribute profile report', help='page title')
    p.add_argument('--table', default=None, help='report the scores of this table instead of scoring')
    p.set_defaults(func=cmd_report)

    p = sub.add_parser('evaluate', formatter_class=fmt,
                       help='agreement with human ratings: PLCC, SRCC, KRCC, 2AFC with bootstrap intervals')
    p.add_argument('ratings', help='CSV: an image column and one numeric column per attribute (any range)')
    p.add_argument('images', nargs='+', help='folder(s) holding the rated images')
    p.add_argument('--map', action='append', default=[], metavar='COLUMN=ATTRIBUTE',
                   help='ratings column -> attribute, e.g. aesthetics=aesthetic (repeatable or comma-separated)')
    p.add_argument('--image-column', default=None,
                   help='column naming the images (default: image / image number / name / file ..., else the first)')
    p.add_argument('--columns', default=None, help='comma-separated ratings columns to use (default: all)')
    p.add_argument('--prompt-set', choices=('paper', 'ensemble', 'both'), default='paper',
                   help="the paper's pairs, the @ensemble phrasings, or both side by side")
    p.add_argument('--attributes-file', default=None, help='JSON/YAML file of your own attributes (see profile)')
    p.add_argument('--ensemble-mode', choices=('mean_prob', 'mean_logit'), default='mean_prob',
                   help='how the phrasings of one attribute combine')
    add_clip_arguments(p)
    p.add_argument('--n-boot', type=int, default=1000, help='bootstrap resamples (0: no intervals)')
    p.add_argument('--alpha', type=float, default=0.05, help='1 - confidence of the intervals')
    p.add_argument('--seed', type=int, default=0, help='bootstrap seed')
    p.add_argument('--out', '-o', default=None, help='also write the table as .csv or .json')
    p.add_argument('--chart', default=None, help='bar chart file (.png or .svg)')
    p.add_argument('--scores-out', default=None, help='write the model scores of the rated images (.csv/.json)')
    p.add_argument('--scores', default=None, metavar='TABLE',
                   help='compare the scores of this table (from uiqa-score, profile or --scores-out) instead of '
                        'scoring again; the CLIP options are then unused')
    p.add_argument('--strict', action='store_true',
                   help='stop when a rated image is missing or unreadable (default: leave it out, name it with '
                        'the reason, exit status 1)')
    p.add_argument('--no-progress', action='store_true', help='hide progress bars')
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser('sensitivity', formatter_class=fmt,
                       help='how much each attribute depends on the prompt wording')
    _add_scoring_arguments(p)
    p.add_argument('--out', '-o', default=None, help='write the per-phrasing table (.csv/.json)')
    p.add_argument('--summary-out', default=None, help='write the per-attribute summary (.csv/.json)')
    p.add_argument('--scores-out', default=None, help='write every phrasing score of every image (.csv/.json)')
    p.add_argument('--matrix', action='store_true', help='also print the SRCC matrix between phrasings')
    p.set_defaults(func=cmd_sensitivity)

    p = sub.add_parser('phrasings', formatter_class=fmt, help='list the ensemble phrasings of attributes')
    _add_attribute_arguments(p, default='ensemble')
    p.set_defaults(func=cmd_phrasings)
    return parser


def main(argv=None):
    """Run ``uiqa-profile``; returns the exit code (0 ok, 1 some images failed, 2 bad usage or input)."""
    args = build_parser().parse_args(argv)
    args.random_weights = None
    try:
        return args.func(args)
    except CommandError as exc:
        _say(args.command, str(exc))
        return exc.code
    except (KeyError, ValueError, OSError, RuntimeError) as exc:
        # ClipLoadError (a RuntimeError) and ImageReadError are only known once scoring imported them
        clip_errors = sys.modules.get('uiqa_plugin.clip')
        if clip_errors is not None and isinstance(exc, clip_errors.ClipLoadError):
            _say(args.command, exc.message(clip_errors.CLI_OPTION_NAMES))
            return 2
        if isinstance(exc, RuntimeError) and not isinstance(exc, OSError):
            raise
        _say(args.command, error_message(exc))
        return 2


if __name__ == '__main__':
    sys.exit(main())
