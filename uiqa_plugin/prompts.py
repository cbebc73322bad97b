"""Antonym prompt pairs: the attributes that CLIP-IQA scores.

An attribute is one or more phrasings of an antonym pair ``(positive, negative)``. Its score
is the softmax probability of the positive prompt against the negative one, in [0, 1]:
higher means *more of the first word* (``noisiness`` high = noisier; torchmetrics reverses
that pair). With several phrasings the score is their mean probability (or the sigmoid of
the mean logit difference, see ``uiqa_plugin.archs.clipiqa_arch``).

Users name attributes (``sharpness``), presets (``look``, ``feel``, ``pyiqa``) or their own
pairs (``"Vivid photo.|Faded photo."``), comma-separated or as a list. A pair whose prompts
contain commas goes in double quotes inside the list: ``quality,"A vivid, bright photo.|A dull photo."``.
"""
import csv
from dataclasses import dataclass


@dataclass(frozen=True)
class Attribute:
    """A named antonym pair (or several phrasings of it). ``pairs[k] = (positive, negative)``."""
    name: str
    pairs: tuple
    description: str = ''
    group: str = 'custom'

    @property
    def prompts(self):
        """All prompts in encoding order: pos0, neg0, pos1, neg1, ..."""
        return tuple(p for pair in self.pairs for p in pair)


_ATTRIBUTES = {}
_PRESETS = {}


def register_attribute(name, pairs, description='', group='custom', overwrite=False):
    """Add an attribute to the registry. ``pairs`` is one (pos, neg) tuple or a list of them."""
    if isinstance(pairs[0], str):
        pairs = [pairs]
    pairs = tuple((str(p), str(n)) for p, n in pairs)
    key = name.lower()
    if key in _ATTRIBUTES and not overwrite:
        raise KeyError(f'attribute {name!r} is already registered')
    _ATTRIBUTES[key] = Attribute(key, pairs, description, group)
    return _ATTRIBUTES[key]


def register_preset(name, attribute_names):
    _PRESETS[name.lower()] = tuple(attribute_names)


# Exact strings of the CLIP-IQA paper (Wang et al., AAAI 2023); index 0 is the prompt that is scored.
_BUILTIN = [
    ('quality', ('Good photo.', 'Bad photo.'), 'overall technical quality', 'quality'),
    ('brightness', ('Bright photo.', 'Dark photo.'), 'higher = brighter', 'look'),
    ('sharpness', ('Sharp photo.', 'Blurry photo.'), 'higher = sharper', 'look'),
    ('noisiness', ('Noisy photo.', 'Clean photo.'), 'higher = noisier (torchmetrics reverses this pair)', 'look'),
    ('colorfulness', ('Colorful photo.', 'Dull photo.'), 'higher = more colourful', 'look'),
    ('contrast', ('High contrast photo.', 'Low contrast photo.'), 'higher = more contrast', 'look'),
    ('aesthetic', ('Aesthetic photo.', 'Not aesthetic photo.'), 'higher = more aesthetic', 'feel'),
    ('happy', ('Happy photo.', 'Sad photo.'), 'higher = happier', 'feel'),
    ('natural', ('Natural photo.', 'Synthetic photo.'), 'higher = more natural', 'feel'),
    ('new', ('New photo.', 'Old photo.'), 'higher = newer-looking', 'feel'),
    ('scary', ('Scary photo.', 'Peaceful photo.'), 'higher = scarier', 'feel'),
    ('complex', ('Complex photo.', 'Simple photo.'), 'higher = more complex', 'feel'),
    # torchmetrics' extra feel pairs
    ('warm', ('Warm photo.', 'Cold photo.'), 'higher = warmer', 'feel_extra'),
    ('real', ('Real photo.', 'Abstract photo.'), 'higher = more real', 'feel_extra'),
    ('beautiful', ('Beautiful photo.', 'Ugly photo.'), 'higher = more beautiful', 'feel_extra'),
    ('lonely', ('Lonely photo.', 'Sociable photo.'), 'higher = lonelier', 'feel_extra'),
    ('relaxing', ('Relaxing photo.', 'Stressful photo.'), 'higher = more relaxing', 'feel_extra'),
]
for _name, _pair, _desc, _group in _BUILTIN:
    register_attribute(_name, _pair, _desc, _group)

# pyiqa's zero-shot 'clipiqa': one score, the mean probability over five pairs.
register_attribute('quality_pyiqa', [
    ('Good image', 'bad image'),
    ('Sharp image', 'blurry image'),
    ('sharp edges', 'blurry edges'),
    ('High resolution image', 'low resolution image'),
    ('Noise-free image', 'noisy image'),
], "pyiqa's five-pair ensemble of technical quality", 'quality')

register_preset('look', ['brightness', 'sharpness', 'noisiness', 'colorfulness', 'contrast'])
register_preset('feel', ['aesthetic', 'happy', 'natural', 'new', 'scary', 'complex'])
register_preset('feel_extra', ['warm', 'real', 'beautiful', 'lonely', 'relaxing'])
register_preset('pyiqa', ['quality_pyiqa'])


def list_attributes():
    """Registered attributes, name -> Attribute."""
    return dict(_ATTRIBUTES)


def list_presets():
    return dict(_PRESETS)


class UnknownAttributeError(KeyError):
    """An attribute name that is neither registered nor a preset; the message says what is known.

    A KeyError for the callers that look attributes up like a mapping; ``str()`` is the sentence
    itself (a plain KeyError would show it quoted, as a key).
    """

    def __str__(self):
        return str(self.args[0]) if self.args else ''


def get_attribute(name):
    try:
        return _ATTRIBUTES[name.lower()]
    except KeyError:
        import difflib
        close = difflib.get_close_matches(name.lower(), list(_ATTRIBUTES) + list(_PRESETS), n=3)
        hint = f' Did you mean {", ".join(close)}?' if close else ''
        raise UnknownAttributeError(f'unknown attribute {name!r}.{hint} Known attributes: '
                                    f'{", ".join(sorted(_ATTRIBUTES))}; presets: {", ".join(sorted(_PRESETS))}; '
                                    'or give a pair as "positive|negative".') from None


def _custom(spec):
    parts = [p.strip() for p in spec.split('|')]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f'custom attribute {spec!r} must be "positive prompt|negative prompt"')
    return Attribute(name=spec, pairs=(tuple(parts),), description='user pair', group='custom')


def _split_specs(spec):
    """Comma-separated string or list -> list of specs. In a string, double quotes keep a spec whole
    (``'quality,"A vivid, bright photo.|A dull photo."'``); a list item holding '|' is one custom
    pair kept whole, so prompts that contain commas can be given either way."""
    if isinstance(spec, str):
        # one line of text: a line break would end the CSV record, other control characters are invisible
        bad = sorted({repr(ch) for ch in spec if not ch.isprintable()})
        if bad:
            raise ValueError(f'attributes {spec!r}: prompts are one line of text; remove {", ".join(bad)}')
        try:  # inside quotes, \" (or "") is a quote of the prompt itself
            fields = next(csv.reader([spec], skipinitialspace=True, escapechar='\\', strict=True), [])
        except csv.Error as exc:
            raise ValueError(f'attributes {spec!r}: cannot be split into attributes ({exc}); put each pair that '
                             'holds commas or quotes in double quotes, with \\" for a quote inside it') from None
        return [s.strip() for s in fields if s.strip()]
    out = []
    for item in spec:
        if isinstance(item, Attribute):
            out.append(item)
        elif isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(s, str) for s in item):
            out.append(f'{item[0]}|{item[1]}')
        elif isinstance(item, str) and '|' in item:
            out.append(item.strip())
        else:
            out.extend(_split_specs(item))
    return out


def _comma_hint(item, spec):
    """The message for an unknown name that is a piece of a custom pair split at a comma ('' if not)."""
    whole = spec if isinstance(spec, str) else ','.join(s for s in spec if isinstance(s, str))
    if '|' not in whole or '|' in item:
        return ''
    return (f'unknown attribute {item!r}: it looks like part of a prompt that contains a comma. Commas '
            'separate attributes, so put the pair in double quotes inside the list, e.g. -a \'quality,"A vivid, bright photo.|A dull '
            'photo."\' (or define it in --attributes-file).')


def resolve_attributes(spec):
    """Turn names, presets, custom ``"pos|neg"`` pairs or Attribute objects into a list of Attributes.

    ``spec``: a comma-separated string, or a list of those. Duplicates are dropped, order kept.
    """
    result, seen = [], set()
    for item in _split_specs(spec):
        if isinstance(item, Attribute):
            attrs = [item]
        elif '|' in item:
            attrs = [_custom(item)]
        elif item.lower() in _PRESETS:
            attrs = [get_attribute(n) for n in _PRESETS[item.lower()]]
        else:
            try:
                attrs = [get_attribute(item)]
            except KeyError:
                hint = _comma_hint(item, spec)
                if not hint:
                    raise
                raise UnknownAttributeError(hint) from None
        for attr in attrs:
            if attr.name not in seen:
                seen.add(attr.name)
                result.append(attr)
    if not result:
        raise ValueError('no attributes given')
    return result
