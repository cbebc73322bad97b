"""Radar charts: one axis per attribute, radii equal to the scores, PNG and SVG files, overlays."""
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

import uiqa_plugin  # noqa: F401
from uiqa_plugin.perception.radar import (SERIES_COLORS, attribute_label, figure_bytes, radar_chart, save_chart,
                                         series_style)

NAMES = ['aesthetic', 'happy', 'natural', 'new', 'scary', 'Vivid photo.|Faded photo.']


def _plotted(ax):
    """(angles, radii) of each plotted line, read back from matplotlib."""
    return [(np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)) for line in ax.lines]


def test_one_axis_per_attribute_and_radii_equal_scores():
    scores = [0.1, 0.9, 0.35, 0.5, 0.0, 1.0]
    chart = radar_chart([('photo.jpg', scores)], NAMES)
    ax = chart.axes
    assert ax.name == 'polar'
    np.testing.assert_allclose(ax.get_xticks(), np.arange(6) * 2 * np.pi / 6)
    np.testing.assert_allclose(chart.angles, np.arange(6) * 2 * np.pi / 6)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[:5] == NAMES[:5] and labels[5].replace('\n', ' ') == 'Vivid photo. / Faded photo.'
    assert ax.get_ylim() == (0.0, 1.0)
    (theta, radii), = _plotted(ax)
    np.testing.assert_allclose(theta, np.append(chart.angles, 0.0))  # closed polygon
    np.testing.assert_allclose(radii, scores + [scores[0]])
    assert chart.series[0][0] == 'photo.jpg'


def test_overlay_of_several_series_with_consistent_colours():
    a, b, c = [0.2, 0.4, 0.6], [0.7, 0.1, 0.3], [0.5, 0.5, 0.5]
    chart = radar_chart([('model A', a), ('model B', b), ('model C', c)], ['x', 'y', 'z'])
    plotted = _plotted(chart.axes)
    assert len(plotted) == 3
    for (theta, radii), values in zip(plotted, (a, b, c)):
        np.testing.assert_allclose(radii[:-1], values)
    colours = [line.get_color() for line in chart.axes.lines]
    assert colours == list(SERIES_COLORS[:3])
    legend = chart.axes.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ['model A', 'model B', 'model C']
    again = radar_chart([('other image', c)], ['x', 'y', 'z'])  # series 0 is always colour 0
    assert again.axes.lines[0].get_color() == colours[0]


def test_images_beside_the_chart():
    img = np.random.default_rng(0).random((30, 50, 3))
    chart = radar_chart([('a', [0.1, 0.2, 0.3]), ('b', [0.3, 0.2, 0.1])], ['x', 'y', 'z'], images=[img, img / 2])
    assert len(chart.image_axes) == 2
    shown = chart.image_axes[0].get_images()[0].get_array()
    assert shown.shape == (30, 50, 3)
    np.testing.assert_array_equal(shown, (img * 255 + 0.5).astype(np.uint8))
    assert chart.image_axes[0].get_position().x1 <= chart.axes.get_position().x0  # beside, not over


def test_out_of_range_values_are_drawn_at_the_rim_but_kept_in_series():
    chart = radar_chart([[1.3, -0.2, 0.5]], ['x', 'y', 'z'])
    np.testing.assert_allclose(_plotted(chart.axes)[0][1], [1.0, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(chart.series[0][1], [1.3, -0.2, 0.5])


def test_saved_png_and_svg(tmp_path):
    chart = radar_chart([('p', [0.3, 0.6, 0.9])], ['happy', 'scary', 'new'],
                        images=[np.zeros((20, 20, 3))], title='p.png')
    paths = save_chart(chart.figure, str(tmp_path / 'sub' / 'p'))
    assert paths == [str(tmp_path / 'sub' / 'p.png'), str(tmp_path / 'sub' / 'p.svg')]
    with Image.open(paths[0]) as im:
        assert im.format == 'PNG' and im.size[0] > 300 and im.size[1] > 200
        assert np.asarray(im.convert('L')).std() > 5  # not a blank page
    root = ET.parse(paths[1]).getroot()
    assert root.tag.endswith('svg')


def test_bad_input():
    with pytest.raises(ValueError, match="series 'a' has 2 values for 3 attributes"):
        radar_chart([('a', [0.1, 0.2])], ['x', 'y', 'z'])
    with pytest.raises(ValueError, match='at least one attribute'):
        radar_chart([('a', [])], [])


def test_long_labels_wrap():
    label = attribute_label('a very long attribute name that goes on')
    assert '\n' in label and all(len(line) <= 14 for line in label.split('\n'))
    assert attribute_label('aesthetic@ensemble') == 'aesthetic\n@ensemble'
    assert attribute_label('new@ensemble') == 'new@ensemble'


def test_many_overlaid_series_all_look_different():
    # Colours alone repeat after len(SERIES_COLORS); later rounds change line style and marker.
    n = 4 * len(SERIES_COLORS)
    chart = radar_chart([(f'image {k}', [0.2 + 0.01 * k] * 3) for k in range(n)], ['x', 'y', 'z'], fill=False)
    looks = [(line.get_color(), line.get_linestyle(), line.get_marker()) for line in chart.axes.lines]
    assert len(looks) == n and len(set(looks)) == n
    assert len(set(SERIES_COLORS)) == len(SERIES_COLORS) >= 10
    # the first round is plain solid lines with round markers, in palette order
    assert looks[:len(SERIES_COLORS)] == [(c, '-', 'o') for c in SERIES_COLORS]
    assert series_style(len(SERIES_COLORS))['linestyle'] != '-'


def test_palette_colours_are_far_apart():
    # no near-duplicates (tab10's blue next to Okabe-Ito's blue looked like a repeat on the charts)
    rgb = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in SERIES_COLORS], dtype=float)
    distances = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1) + np.eye(len(rgb)) * 1e9
    assert distances.min() > 60, distances.min()


def _extents(chart):
    chart.figure.canvas.draw()  # tick labels are placed at draw time
    renderer = chart.figure.canvas.get_renderer()
    return renderer, [label.get_window_extent(renderer) for label in chart.axes.get_xticklabels()]


def test_attribute_names_clear_the_outer_ring():
    names = ['noisiness', 'sharpness', 'brightness', 'colorfulness', 'contrast', 'aesthetic']
    chart = radar_chart([('a', [0.9, 1.0, 0.5, 0.3, 1.0, 0.7])], names)
    renderer, boxes = _extents(chart)
    ax = chart.axes
    centre = ax.transData.transform((0.0, 0.0))
    ring = np.hypot(*(ax.transData.transform((0.0, 1.0)) - centre))  # outer ring radius in pixels
    for name, box in zip(names, boxes):
        # the point of each label box nearest the centre lies outside the outer ring
        nx = np.clip(centre[0], box.x0, box.x1)
        ny = np.clip(centre[1], box.y0, box.y1)
        assert np.hypot(nx - centre[0], ny - centre[1]) > ring + 8, name  # pixels of clear space


def test_values_are_written_beside_their_points_and_ring_labels_are_readable():
    chart = radar_chart([('a', [0.125, 0.5, 0.875])], ['x', 'y', 'z'])
    texts = [t.get_text() for t in chart.axes.texts]
    assert texts == ['0.12', '0.50', '0.88']  # f'{v:.2f}' of each score (0.125 rounds to even)
    ring_labels = chart.axes.get_yticklabels()
    assert all(label.get_fontsize() >= 8 and label.get_zorder() > 2 for label in ring_labels)
    many = radar_chart([('a', [0.1, 0.2, 0.3]), ('b', [0.3, 0.2, 0.1]), ('c', [0.5, 0.5, 0.5])], ['x', 'y', 'z'])
    assert list(many.axes.texts) == []  # three overlaid series: values would clutter


def test_caption_and_dollar_names_are_plain_text():
    chart = radar_chart([('$\\nope$.png', [0.5, 0.5]), ('b', [0.2, 0.2])], ['cost $\\nope$', 'y'],
                        title='a $\\nope$ b', caption='RANDOM WEIGHTS')
    figure_svg = figure_bytes(chart.figure, 'svg').decode()
    assert 'RANDOM WEIGHTS' in figure_svg
    assert [t.get_text() for t in chart.figure.texts] == ['a $\\nope$ b', 'RANDOM WEIGHTS']
