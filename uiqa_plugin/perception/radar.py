"""Radar (polar) charts of attribute profiles: one axis per attribute, radius = score in [0, 1].

One chart can overlay several series (several images, or several models / prompt sets on one
image); series k always gets style k of ``series_style`` (colour, line style, marker), so the
same ordering gives the same look on every chart. Figures are built without pyplot (no global state) on the Agg canvas.

    >>> chart = radar_chart([('photo.jpg', [0.7, 0.2, 0.9])], ['aesthetic', 'scary', 'natural'], images=[img])
    >>> save_chart(chart.figure, 'charts/photo')   # charts/photo.png, charts/photo.svg
"""
import os
import textwrap
from dataclasses import dataclass, field

import numpy as np

# Twelve clearly different colours: colour-blind-friendly Okabe-Ito, then purple, brown, grey and olive
# (tab10's near-duplicates of Okabe-Ito's blue, orange and green are left out).
SERIES_COLORS = ('#0072B2', '#E69F00', '#009E73', '#CC79A7', '#D55E00', '#56B4E9', '#F0E442', '#000000',
                 '#9467bd', '#8c564b', '#7f7f7f', '#bcbd22')
# After the colours run out, the next round of series changes line style and marker, so the first
# len(SERIES_COLORS) * 4 = 48 series all look different.
SERIES_LINESTYLES = ('-', '--', ':', '-.')
SERIES_MARKERS = ('o', 's', '^', 'D')
#: distance (points) between the outer ring and the attribute names
LABEL_PAD = 22


def series_color(index):
    return SERIES_COLORS[index % len(SERIES_COLORS)]


def series_style(index):
    """Matplotlib line keywords of series ``index``: colour, line style and marker (distinct for 48 series)."""
    round_ = (index // len(SERIES_COLORS)) % len(SERIES_LINESTYLES)
    return {'color': series_color(index), 'linestyle': SERIES_LINESTYLES[round_], 'marker': SERIES_MARKERS[round_]}


@dataclass
class RadarChart:
    """figure: matplotlib Figure; axes: the polar Axes; image_axes: thumbnail Axes (may be empty);
    angles: (P,) axis angles in radians; series: [(label, (P,) radii)] as plotted, in order."""
    figure: object
    axes: object
    angles: np.ndarray
    series: list
    image_axes: list = field(default_factory=list)


def attribute_label(name, width=14):
    """Axis label: custom pairs 'pos|neg' become 'pos / neg'; long names wrap onto several lines
    (before an '@' suffix such as '@ensemble' rather than inside a word)."""
    text = ' / '.join(p.strip() for p in name.split('|')) if '|' in name else name
    lines = textwrap.wrap(text.replace('@', ' @'), width=width, break_long_words=True)
    return '\n'.join(lines).replace(' @', '@') or name


def _as_series(series, num_attributes):
    out = []
    for index, item in enumerate(series):
        label, values = item if isinstance(item, tuple) else (f'series {index}', item)
        radii = np.asarray(values, dtype=np.float64).reshape(-1)
        if radii.size != num_attributes:
            raise ValueError(f'radar series {label!r} has {radii.size} values for {num_attributes} attributes')
        out.append((str(label), radii))
    return out


def radar_chart(series, attribute_names, images=None, title=None, fill=True, figsize=None, dpi=100, caption=None,
                show_values=None):
    """Build a radar chart.

    series: list of (label, scores) or bare score sequences; each scores has one value per attribute
        (in [0, 1]; values outside are drawn at the rim/centre, the legend keeps the label).
    attribute_names: the P axis names, clockwise from the top.
    images: optional list of RGB arrays (H, W, 3) in [0, 1] or uint8, shown beside the chart with a
        border in their series' colour (one image for several models, or one per series).
    caption: a line under the chart (e.g. that the scores come from random weights).
    show_values: write each score next to its point (default: with at most two series).
    Every text (names, labels, title) is drawn as written: a '$' in a file name is not math.
    Returns a ``RadarChart``; the plotted radii are ``chart.series`` and the Axes' lines.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(attribute_names)
    if not names:
        raise ValueError('a radar chart needs at least one attribute')
    data = _as_series(series, len(names))
    if not data:
        raise ValueError('a radar chart needs at least one series')
    images = list(images or [])
    n_img = len(images)
    if figsize is None:
        figsize = (6.4 + (2.6 if n_img else 0.0), 5.6)
    figure = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(figure)
    if n_img:
        grid = figure.add_gridspec(max(n_img, 1), 2, width_ratios=[1.0, 2.6], wspace=0.15)
        ax = figure.add_subplot(grid[:, 1], projection='polar')
    else:
        ax = figure.add_subplot(1, 1, 1, projection='polar')

    angles = np.linspace(0.0, 2.0 * np.pi, len(names), endpoint=False)
    ax.set_theta_offset(np.pi / 2)   # first attribute at the top
    ax.set_theta_direction(-1)       # clockwise, like reading a clock
    ax.set_ylim(0.0, 1.0)
    ax.set_yticks([0.25, 0.5, 0.75, 1.0])
    # ring labels: readable, on a white box, above the filled polygons
    ax.set_yticklabels(['0.25', '0.5', '0.75', '1'], fontsize=8, color='#444444', zorder=5,
                       bbox={'boxstyle': 'round,pad=0.15', 'facecolor': 'white', 'edgecolor': 'none', 'alpha': 0.8})
    ax.set_rlabel_position(180.0 / len(names))  # between the first two axes, away from the data labels
    ax.set_xticks(angles)
    ax.set_xticklabels([attribute_label(n) for n in names], fontsize=9, parse_math=False)
    ax.tick_params(axis='x', pad=LABEL_PAD)  # clear of the outer ring, whatever the label's angle
    ax.grid(color='#cccccc', linewidth=0.8)

    closed = np.append(angles, angles[0])
    show_values = len(data) <= 2 if show_values is None else show_values
    for index, (label, radii) in enumerate(data):
        style = series_style(index)
        shown = np.clip(radii, 0.0, 1.0)
        ax.plot(closed, np.append(shown, shown[0]), linewidth=2.0, markersize=4, label=label, **style)
        if fill:
            ax.fill(closed, np.append(shown, shown[0]), color=style['color'], alpha=0.12)
        if show_values:
            for angle, value, radius in zip(angles, radii, shown):
                ax.text(angle, min(radius + 0.09, 1.04), f'{value:.2f}', fontsize=7, color=style['color'],
                        ha='center', va='center', zorder=6, parse_math=False,
                        bbox={'boxstyle': 'round,pad=0.1', 'facecolor': 'white', 'edgecolor': 'none', 'alpha': 0.7})
    if len(data) > 1:
        legend = ax.legend(loc='upper left', bbox_to_anchor=(1.02, 1.12), fontsize=8, frameon=False)
        for text in legend.get_texts():
            text.set_parse_math(False)
    if title:
        figure.suptitle(title, fontsize=11, parse_math=False)
    if caption:
        figure.text(0.5, 0.01, caption, ha='center', va='bottom', fontsize=10, color='#b00000', weight='bold',
                    parse_math=False)

    image_axes = []
    for index, image in enumerate(images):
        iax = figure.add_subplot(grid[index, 0])
        iax.imshow(_displayable(image))
        iax.set_xticks([])
        iax.set_yticks([])
        color = series_color(index) if len(data) > 1 and len(images) > 1 else '#999999'
        for spine in iax.spines.values():
            spine.set_edgecolor(color)
            spine.set_linewidth(3.0 if color != '#999999' else 1.0)
        image_axes.append(iax)
    return RadarChart(figure, ax, angles, data, image_axes)


def _displayable(image):
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return arr


def thumbnail(image, size=256):
    """RGB float (H, W, 3) in [0, 1] -> uint8 array whose longer side is at most ``size``."""
    from PIL import Image
    pil = Image.fromarray(_displayable(image))
    pil.thumbnail((size, size), Image.LANCZOS)
    return np.asarray(pil)


def save_chart(figure, stem, formats=('png', 'svg'), dpi=None):
    """Save ``figure`` as ``<stem>.<fmt>`` for each format; returns the written paths."""
    folder = os.path.dirname(os.path.abspath(stem))
    os.makedirs(folder, exist_ok=True)
    paths = []
    for fmt in formats:
        path = f'{stem}.{fmt}'
        figure.savefig(path, format=fmt, dpi=dpi, bbox_inches='tight')
        paths.append(path)
    return paths


def figure_bytes(figure, fmt='svg', dpi=None):
    """The figure encoded as ``fmt`` bytes (for embedding in HTML)."""
    import io
    buf = io.BytesIO()
    figure.savefig(buf, format=fmt, dpi=dpi, bbox_inches='tight')
    return buf.getvalue()
