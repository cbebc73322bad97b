"""Declared choices and ranges of option values, checked before anything is built.

Archs and transforms declare ``option_rules = {option: rule}``; ``rule_problems`` returns one
message per bad value, naming its dotted key, with a "did you mean" for a near miss. The same
rules run when an option file is validated (before any experiment folder is made or renamed)
and when a checkpoint's options are read (``uiqa_plugin.options.check_checkpoint_options``).

A rule is a callable ``rule(value, options) -> message or None`` (``options``: the whole block,
for rules that depend on another option such as ``clip_model``).
"""
import difflib
import numbers


def _shown(values):
    return ', '.join('null' if v is None else str(v).lower() if isinstance(v, bool) else repr(v) for v in values)


def did_you_mean(word, choices):
    """' (did you mean 'x'?)' for a close string among ``choices``, else ''."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices if isinstance(c, str)], n=1)
    return f' (did you mean {close[0]!r}?)' if close else ''


class OneOf:
    """The value is one of ``values`` (compared with ``==``, and bool only to bool)."""

    def __init__(self, *values):
        self.values = values

    def __call__(self, value, options=None):
        if any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in self.values):
            return None
        return f'{value!r} is not one of {_shown(self.values)}' + did_you_mean(value, self.values)


class Number:
    """A number in [low, high] (``integer``: a whole number; ``none_ok``: null allowed)."""

    def __init__(self, low=None, high=None, integer=False, none_ok=False, why=''):
        self.low, self.high, self.integer, self.none_ok, self.why = low, high, integer, none_ok, why

    def __call__(self, value, options=None):
        if value is None and self.none_ok:
            return None
        kind = 'a whole number' if self.integer else 'a number'
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
                (self.integer and not isinstance(value, numbers.Integral)):
            return f'expected {kind}, got {value!r}'
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            low = '' if self.low is None else f'>= {self.low}'
            high = '' if self.high is None else f'<= {self.high}'
            return f'{value!r} is out of range: expected {kind} {" and ".join(x for x in (low, high) if x)}' + \
                (f' ({self.why})' if self.why else '')
        return None


class Size:
    """A side length or [height, width], each a whole number in [1, ``limit``]."""

    def __init__(self, limit, why=''):
        self.side = Number(1, limit, integer=True, why=why)

    def __call__(self, value, options=None):
        sides = value if isinstance(value, (list, tuple)) else [value]
        if isinstance(value, (list, tuple)) and len(value) != 2:
            return f'expected a size or [height, width], got {value!r}'
        for side in sides:
            problem = self.side(side)
            if problem:
                return problem
        return None


class Names:
    """One name or a list of distinct names, each from ``choices`` (``empty_ok``: [] allowed)."""

    def __init__(self, choices, empty_ok=False):
        self.choices, self.empty_ok = tuple(choices), empty_ok

    def __call__(self, value, options=None):
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            return f'expected a name or a list of names from {_shown(self.choices)}, got {value!r}'
        if not names and not self.empty_ok:
            return f'expected at least one of {_shown(self.choices)}'
        for name in names:
            if name not in self.choices:
                return f'{name!r} is not one of {_shown(self.choices)}' + did_you_mean(name, self.choices)
        if len(set(names)) != len(names):
            return f'names repeat in {list(names)}'
        return None


class Block:
    """A mapping (or null) whose keys are ``accepted`` and whose values follow ``rules``."""

    def __init__(self, rules, accepted=None):
        self.rules, self.accepted = rules, set(accepted or rules)

    def problems(self, value, where):
        if value is None:
            return []
        if not isinstance(value, dict):
            return [f'{where}: expected a mapping, got {value!r}']
        out = [f'{where}.{key}: unknown option{did_you_mean(key, sorted(self.accepted))}'
               for key in value if key not in self.accepted]
        return out + rule_problems(self.rules, value, where)


def rule_problems(rules, options, where):
    """Messages ``'{where}.{key}: ...'`` for each value in ``options`` that breaks its rule."""
    out = []
    for key, rule in rules.items():
        if key not in options:
            continue
        if isinstance(rule, Block):
            out += rule.problems(options[key], f'{where}.{key}')
            continue
        try:
            problem = rule(options[key], options)
        except Exception as exc:  # a rule must never turn a bad value into a traceback
            problem = f'{options[key]!r} is not usable ({type(exc).__name__}: {exc})'
        if problem:
            out.append(f'{where}.{key}: {problem}')
    return out
