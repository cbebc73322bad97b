"""Prompt ensembles: several phrasings of every built-in attribute.

Wording moves CLIP's answers (KonIQ SRCC 0.695 with one pair, 0.657 with pyiqa's five). An ensemble scores each phrasing
of an antonym pair and averages them (mean probability by default, ``ensemble='mean_logit'``
on the arch for the mean of logits), which is steadier than any single wording.

The defaults stay the paper's single pairs: ensembles have their own names,
``<attribute>@ensemble`` (``happy@ensemble``), and presets ``look@ensemble``,
``feel@ensemble``, ``feel_extra@ensemble`` and ``ensemble`` (all of them). The paper's exact
pair is always phrasing 0. ``quality_pyiqa`` is already pyiqa's five-pair ensemble and has
no ``@ensemble`` twin.

    >>> import uiqa_plugin.perception  # registers the ensembles
    >>> metric = uiqa_plugin.create_metric('feel@ensemble')
"""
import json
import os.path as osp

from uiqa_plugin.prompts import Attribute, get_attribute, list_attributes, register_attribute, register_preset

ENSEMBLE_SUFFIX = '@ensemble'

# (positive, negative) phrasings per built-in attribute; index 0 is the paper's pair, unchanged.
ENSEMBLE_PHRASINGS = {
    'quality': [
        ('Good photo.', 'Bad photo.'),
        ('a high quality photo', 'a low quality photo'),
        ('a good image', 'a bad image'),
        ('This photo has excellent quality.', 'This photo has poor quality.'),
    ],
    'brightness': [
        ('Bright photo.', 'Dark photo.'),
        ('a bright image', 'a dark image'),
        ('a well-lit photo', 'a poorly lit photo'),
        ('This photo is bright.', 'This photo is dark.'),
    ],
    'sharpness': [
        ('Sharp photo.', 'Blurry photo.'),
        ('a sharp image', 'a blurry image'),
        ('a photo in sharp focus', 'an out-of-focus photo'),
        ('This photo has crisp details.', 'This photo has blurred details.'),
    ],
    'noisiness': [
        ('Noisy photo.', 'Clean photo.'),
        ('a noisy image', 'a clean image'),
        ('a grainy photo', 'a smooth photo'),
        ('This photo has a lot of noise.', 'This photo is noise-free.'),
    ],
    'colorfulness': [
        ('Colorful photo.', 'Dull photo.'),
        ('a colorful image', 'a dull image'),
        ('a vivid, saturated photo', 'a faded, washed-out photo'),
        ('This photo is full of color.', 'This photo has muted colors.'),
    ],
    'contrast': [
        ('High contrast photo.', 'Low contrast photo.'),
        ('a high contrast image', 'a low contrast image'),
        ('a punchy photo with deep blacks and bright whites', 'a flat photo with grey tones'),
        ('This photo has strong contrast.', 'This photo has weak contrast.'),
    ],
    'aesthetic': [
        ('Aesthetic photo.', 'Not aesthetic photo.'),
        ('an aesthetic image', 'an unaesthetic image'),
        ('a beautifully composed photo', 'a poorly composed photo'),
        ('This photo is visually pleasing.', 'This photo is visually unpleasant.'),
    ],
    'happy': [
        ('Happy photo.', 'Sad photo.'),
        ('a happy image', 'a sad image'),
        ('This photo feels joyful.', 'This photo feels gloomy.'),
        ('a cheerful photo', 'a depressing photo'),
    ],
    'natural': [
        ('Natural photo.', 'Synthetic photo.'),
        ('a natural image', 'a synthetic image'),
        ('a photo of a real scene', 'a computer-generated image'),
        ('This photo looks natural.', 'This photo looks artificial.'),
    ],
    'new': [
        ('New photo.', 'Old photo.'),
        ('a new image', 'an old image'),
        ('a modern, recent photo', 'a vintage, old-fashioned photo'),
        ('This photo looks recent.', 'This photo looks dated.'),
    ],
    'scary': [
        ('Scary photo.', 'Peaceful photo.'),
        ('a scary image', 'a peaceful image'),
        ('This photo feels frightening.', 'This photo feels calm.'),
        ('a creepy photo', 'a serene photo'),
    ],
    'complex': [
        ('Complex photo.', 'Simple photo.'),
        ('a complex image', 'a simple image'),
        ('a cluttered, detailed photo', 'a minimal, plain photo'),
        ('This photo is busy and intricate.', 'This photo is sparse and simple.'),
    ],
    'warm': [
        ('Warm photo.', 'Cold photo.'),
        ('a warm image', 'a cold image'),
        ('a photo with warm tones', 'a photo with cool tones'),
        ('This photo feels warm.', 'This photo feels cold.'),
    ],
    'real': [
        ('Real photo.', 'Abstract photo.'),
        ('a realistic image', 'an abstract image'),
        ('a photo of real objects', 'abstract art'),
        ('This photo is realistic.', 'This photo is abstract.'),
    ],
    'beautiful': [
        ('Beautiful photo.', 'Ugly photo.'),
        ('a beautiful image', 'an ugly image'),
        ('This photo is lovely.', 'This photo is hideous.'),
        ('a gorgeous photo', 'an unattractive photo'),
    ],
    'lonely': [
        ('Lonely photo.', 'Sociable photo.'),
        ('a lonely image', 'a sociable image'),
        ('This photo feels lonely and isolated.', 'This photo feels social and together.'),
        ('a photo of solitude', 'a photo of companionship'),
    ],
    'relaxing': [
        ('Relaxing photo.', 'Stressful photo.'),
        ('a relaxing image', 'a stressful image'),
        ('This photo feels calm and soothing.', 'This photo feels tense and stressful.'),
        ('a tranquil photo', 'a hectic photo'),
    ],
}

ENSEMBLE_PRESETS = {
    'look' + ENSEMBLE_SUFFIX: ['brightness', 'sharpness', 'noisiness', 'colorfulness', 'contrast'],
    'feel' + ENSEMBLE_SUFFIX: ['aesthetic', 'happy', 'natural', 'new', 'scary', 'complex'],
    'feel_extra' + ENSEMBLE_SUFFIX: ['warm', 'real', 'beautiful', 'lonely', 'relaxing'],
    'ensemble': list(ENSEMBLE_PHRASINGS),
}


def ensemble_name(name):
    """'happy' -> 'happy@ensemble' (unchanged if it already is one)."""
    return name if name.endswith(ENSEMBLE_SUFFIX) else name + ENSEMBLE_SUFFIX


def base_name(name):
    """'happy@ensemble' -> 'happy'."""
    return name[:-len(ENSEMBLE_SUFFIX)] if name.endswith(ENSEMBLE_SUFFIX) else name


def register_ensembles():
    """Register ``<name>@ensemble`` for every curated attribute and the ensemble presets (idempotent)."""
    known = list_attributes()
    for name, pairs in ENSEMBLE_PHRASINGS.items():
        base = known[name]
        if base.pairs[0] != pairs[0]:  # the paper's pair must stay first: catch edits of either table
            raise RuntimeError(f'ensemble of {name!r} must start with the paper pair {base.pairs[0]}, got {pairs[0]}')
        if ensemble_name(name) not in known:
            register_attribute(ensemble_name(name), pairs,
                               f'mean of {len(pairs)} phrasings; {base.description}', base.group + ENSEMBLE_SUFFIX)
    for preset, members in ENSEMBLE_PRESETS.items():
        register_preset(preset, [ensemble_name(m) for m in members])


def with_ensembles(attributes):
    """Each attribute replaced by its ``@ensemble`` twin where one exists (others kept as they are)."""
    known = list_attributes()
    return [known.get(ensemble_name(a.name), a) for a in attributes]


def split_phrasings(attribute):
    """One single-pair Attribute per phrasing, named ``<name>[k]``, in phrasing order."""
    return [Attribute(f'{attribute.name}[{k}]', (pair,), f'phrasing {k} of {attribute.name}', attribute.group)
            for k, pair in enumerate(attribute.pairs)]


def _parse_pair(item, where):
    if isinstance(item, str):
        parts = [p.strip() for p in item.split('|')]
    elif isinstance(item, (list, tuple)):
        parts = [str(p).strip() for p in item]
    else:
        parts = []
    if len(parts) != 2 or not all(parts):
        raise ValueError(f'{where}: a phrasing must be "positive|negative" or [positive, negative], got {item!r}')
    return tuple(parts)


def load_attribute_file(path, overwrite=False):
    """Register user attributes with several phrasings from a JSON or YAML file; returns their names.

    The file maps a name to a list of phrasings, each ``"positive|negative"`` or ``[positive, negative]``:
    ``{"cosy": ["Cosy photo.|Bleak photo.", ["a cosy room", "a bleak room"]]}``.
    """
    suffix = osp.splitext(str(path))[1].lower()
    try:
        with open(path, encoding='utf-8') as f:
            if suffix in ('.yml', '.yaml'):
                import yaml
                data = yaml.safe_load(f)
            else:
                data = json.load(f)
    except OSError as exc:
        raise ValueError(f'{path}: cannot read attribute file ({exc.strerror or exc})') from None
    except ValueError as exc:  # json and yaml parse errors
        raise ValueError(f'{path}: not valid {"YAML" if suffix in (".yml", ".yaml") else "JSON"} ({exc})') from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f'{path}: expected a mapping of attribute name -> list of phrasings')
    names = []
    for name, phrasings in data.items():
        if isinstance(phrasings, str) or not isinstance(phrasings, (list, tuple)) or not phrasings:
            raise ValueError(f'{path}: attribute {name!r} needs a non-empty list of phrasings')
        pairs = [_parse_pair(p, f'{path}: attribute {name!r} phrasing {k}') for k, p in enumerate(phrasings)]
        existing = list_attributes().get(str(name).lower())
        if existing is not None and existing.pairs != tuple(pairs) and not overwrite:
            raise ValueError(f'{path}: attribute {name!r} already exists with other phrasings; choose another name')
        if existing is None or existing.pairs != tuple(pairs):
            register_attribute(str(name), pairs, f'user attribute from {osp.basename(str(path))}', 'user',
                               overwrite=True)
        names.append(get_attribute(str(name)).name)
    return names


register_ensembles()
