"""A self-contained HTML report of attribute profiles: sortable score table and one radar chart per image.

The page needs no network: styles, the sorting script, charts and (by default) thumbnails are
inline. ``images='link'`` links the original files relative to the page instead, so the page
stays small but must keep its place next to them.

    >>> write_report(result.rows, result.attribute_names, 'report.html', attributes=metric.attributes)
"""
import base64
import datetime
import html
import os
import os.path as osp
import urllib.parse
import warnings

from uiqa_plugin.checkpoint_io import write_atomically
from uiqa_plugin.perception.radar import figure_bytes, radar_chart, thumbnail

_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.meta{color:#666;font-size:13px;margin-bottom:12px}
table{border-collapse:collapse;background:#fff;font-size:13px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right;vertical-align:middle}
th{background:#f0f0f0;cursor:pointer;user-select:none;max-width:9em}
.scroll{overflow-x:auto;max-width:100%}
th.sorted-asc::after{content:' \\25B2'} th.sorted-desc::after{content:' \\25BC'}
td.name,th.name{text-align:left;min-width:6em;max-width:320px;overflow-wrap:anywhere}
td.thumb{padding:2px;text-align:center} td.thumb img{max-height:56px;max-width:84px;display:block;margin:auto}
td.score{font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:16px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px;width:540px;box-sizing:border-box}
.card h3{font-size:14px;margin:0 0 6px;word-break:break-all}
.card .row{display:flex;gap:10px;align-items:flex-start}
.card .photo{width:150px;height:auto;max-height:340px;object-fit:contain;border:1px solid #ccc}
.card .chart{width:350px;height:auto;flex:none}
dl.prompts{font-size:12px;color:#444;display:grid;grid-template-columns:max-content auto;gap:2px 12px}
dl.prompts dt{font-weight:600} dl.prompts dd{margin:0}
.warning{background:#fde8e8;border:3px solid #c0392b;color:#7b1d12;font-size:16px;padding:12px 16px;margin:8px 0 16px;
border-radius:6px}
"""

# Click a header to sort by it; numbers sort numerically (data-v), again to reverse.
_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function(table){
  var heads = table.querySelectorAll('th');
  heads.forEach(function(th, col){
    if (th.dataset.nosort) return;
    th.addEventListener('click', function(){
      var asc = !th.classList.contains('sorted-asc');
      heads.forEach(function(h){ h.classList.remove('sorted-asc', 'sorted-desc'); });
      th.classList.add(asc ? 'sorted-asc' : 'sorted-desc');
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function(a, b){
        var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
        return asc ? c : -c;
      });
      rows.forEach(function(r){ body.appendChild(r); });
    });
  });
  // A link ending in #sort=<column> (or #sort=<column>&desc) opens the page sorted by that column.
  var m = /^#sort=([^&]+)(&desc)?$/.exec(decodeURIComponent(location.hash));
  if (m) heads.forEach(function(th){
    if (th.textContent === m[1]) { th.click(); if (m[2]) th.click(); }
  });
});
"""


_WARNING_TAG = 'MEANINGLESS SCORES'


def _data_uri(data, mime):
    return f'data:{mime};base64,{base64.b64encode(data).decode("ascii")}'


def _thumbnail_uri(image, size):
    import io
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(thumbnail(image, size)).save(buf, format='JPEG', quality=85)
    return _data_uri(buf.getvalue(), 'image/jpeg')


def _linked_uri(path, page_dir):
    rel = osp.relpath(osp.abspath(path), page_dir).replace(os.sep, '/')
    return urllib.parse.quote(rel)


def _score_color(value):
    """Light background for a score cell: white at 0, blue at 1 (dark text stays readable)."""
    try:
        v = min(max(float(value), 0.0), 1.0)
    except (TypeError, ValueError):
        return '#ffffff'
    r, g, b = (int(255 - v * (255 - c)) for c in (140, 185, 230))
    return f'#{r:02x}{g:02x}{b:02x}'


def _breakable(name):
    """Escaped column name that may wrap before '@' and after '|' (long ensemble and pair names)."""
    return html.escape(name).replace('@', '<wbr>@').replace('|', '|<wbr>')


def _fmt(value, digits):
    return f'{value:.{digits}f}' if isinstance(value, float) else html.escape(str(value))


def _prompt_list(attributes):
    if not attributes:
        return ''
    items = []
    for attr in attributes:
        pairs = '; '.join(f'“{p}” vs “{n}”' for p, n in attr.pairs)
        items.append(f'<dt>{html.escape(attr.name)}</dt><dd>{html.escape(pairs)}</dd>')
    return f'<h2>Prompts</h2><dl class="prompts">{"".join(items)}</dl>'


def write_report(rows, attribute_names, out_path, images='embed', attributes=None, chart_format='svg',
                 thumb_size=256, title='Attribute profile report', description='', digits=4, progress=True,
                 warning=None):
    """Write the HTML report and return its path.

    rows: [{'path': image file, attribute: float}] (e.g. ``ScoreResult.rows``); attribute_names: the
    columns to show and chart (scores in [0, 1]); images: 'embed' (base64 JPEG thumbnails) or 'link'
    (relative links to the files); attributes: optional Attribute objects, to list their prompts;
    chart_format: 'svg' or 'png' (both embedded as data URIs); warning: text shown in a red banner at
    the top and in the page title, e.g. that the scores come from random weights
    (``perception.profile.random_weights_reason``).
    """
    from tqdm import tqdm

    from uiqa_plugin.data.image_io import ImageReadError, read_image  # lazy: the data package imports torch
    if images not in ('embed', 'link'):
        raise ValueError(f"images must be 'embed' or 'link', got {images!r}")
    if chart_format not in ('svg', 'png'):
        raise ValueError(f"chart_format must be 'svg' or 'png', got {chart_format!r}")
    names = list(attribute_names)
    for number, row in enumerate(rows, start=1):
        missing = [n for n in names if n not in row]
        if missing or 'path' not in row:
            raise ValueError(f'report row {number} ({row.get("path", "?")}) lacks {", ".join(missing or ["path"])}')
    page_dir = osp.dirname(osp.abspath(out_path))
    mime = 'image/svg+xml' if chart_format == 'svg' else 'image/png'

    head = ['<th data-nosort="1">image</th>', '<th class="name">name</th>']
    head += [f'<th>{_breakable(n)}</th>' for n in names]
    body, cards = [], []
    for row in tqdm(rows, desc='report', unit='img', disable=not progress):
        path = str(row['path'])
        name = osp.basename(path)
        if images == 'link':
            src = _linked_uri(path, page_dir)
        else:
            try:
                src = _thumbnail_uri(read_image(path), thumb_size)
            except ImageReadError as exc:  # scores may come from a table: still report them, say why no picture
                warnings.warn(f'report: no thumbnail for {exc}', RuntimeWarning, stacklevel=2)
                src = ''
        img_tag = f'<img src="{html.escape(src)}" alt="{html.escape(name)}" loading="lazy">' if src else '—'
        cells = [f'<td class="thumb">{img_tag}</td>',
                 f'<td class="name" data-v="{html.escape(name)}" title="{html.escape(path)}">{html.escape(name)}</td>']
        for n in names:
            value = row[n]
            cells.append(f'<td class="score" data-v="{value!r}" style="background:{_score_color(value)}">'
                         f'{_fmt(value, digits)}</td>')
        body.append(f'<tr>{"".join(cells)}</tr>')

        chart = radar_chart([(name, [row[n] for n in names])], names, figsize=(5.2, 4.6))
        chart_uri = _data_uri(figure_bytes(chart.figure, chart_format), mime)
        photo = f'<img class="photo" src="{html.escape(src)}" alt="{html.escape(name)}">' if src else ''
        cards.append(f'<div class="card"><h3 title="{html.escape(path)}">{html.escape(name)}</h3><div class="row">'
                     f'{photo}<img class="chart" src="{chart_uri}" alt="radar chart of {html.escape(name)}">'
                     f'</div></div>')

    stamp = datetime.datetime.now().strftime('%Y-%m-%d %H:%M')
    meta = f'{len(rows)} image(s), {len(names)} attribute(s); generated {stamp}.'
    if description:
        meta = f'{html.escape(description)}<br>{meta}'
    banner = (f'<div class="warning" role="alert" id="warning"><strong>Warning:</strong> {html.escape(warning)}</div>'
              if warning else '')
    page_title = f'[{_WARNING_TAG}] {title}' if warning else title
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{html.escape(page_title)}</title><style>{_STYLE}</style></head><body>'
            f'<h1>{html.escape(title)}</h1>{banner}<div class="meta">{meta} Scores are CLIP probabilities in [0, 1] '
            f'(higher = more of the first prompt). Click a column header to sort (a link ending in '
            f'<code>#sort=column</code> opens it sorted).</div>'
            f'<div class="scroll"><table class="sortable" id="scores"><thead><tr>{"".join(head)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>'
            f'{_prompt_list(attributes)}'
            f'<h2>Radar charts</h2><div class="cards">{"".join(cards)}</div>'
            f'<script>{_SCRIPT}</script></body></html>\n')
    # a unique temporary file beside the page, fsynced, then renamed: never half a page, two runs never collide
    return write_atomically(out_path, lambda f: f.write(page), mode='w', encoding='utf-8')
