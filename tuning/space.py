"""The search space of a hyper-parameter search: which main.py flags Optuna samples, and from what.

One dimension per flag, written FLAG=SPEC (on the command line, or as {"FLAG": "SPEC"} in a JSON file):
- `low:high`: a float uniform in [low, high] (an integer for an integer flag);
- `log:low:high`: log-uniform (low > 0), a float or, for an integer flag, an integer;
- `choice:a,b,c`: one of the values, each read as the flag reads it (true/false for an on/off flag).
"""
import argparse
import difflib
import math
from dataclasses import dataclass

from plumbing.errors import UserError

NOT_SEARCHABLE = ('dataset', 'source_path', 'split_file', 'save_path', 'savename', 'group', 'project', 'log_online',
                  'wandb_key', 'resume', 'dry_run', 'use_tv_split', 'cv_folds', 'cv_fold', 'no_test_metrics',
                  'evaluation_metrics', 'storage_metrics', 'kernels', 'gpu', 'dist_backend', 'dist_timeout')
"""Flags that say where data and runs are, or that the search itself sets (the validation protocol)."""


@dataclass(frozen=True)
class Dimension:
    """One searched flag: `kind` 'float', 'int' or 'choice'; `low`/`high`/`log` for numbers, `choices` else."""
    flag: str
    kind: str
    low: float = None
    high: float = None
    log: bool = False
    choices: tuple = ()
    switch: bool = False
    """An on/off flag (store_true): its choices are True and False, passed as the flag or nothing."""

    def suggest(self, trial):
        """This dimension's value for an Optuna trial."""
        if self.kind == 'float':
            return trial.suggest_float(self.flag, self.low, self.high, log=self.log)
        if self.kind == 'int':
            return trial.suggest_int(self.flag, self.low, self.high, log=self.log)
        return trial.suggest_categorical(self.flag, list(self.choices))

    def arguments(self, value):
        """main.py's command-line arguments that set this flag to `value`."""
        if self.switch:
            return [f'--{self.flag}'] if value else []
        return [f'--{self.flag}', str(value)]

    def extremes(self):
        """The values whose arguments show every way a sampled value can be refused (for a check before any
        trial starts)."""
        return [self.low, self.high] if self.kind != 'choice' else list(self.choices)


def flag_actions(parser):
    """{dest: argparse action} of main.py's flags."""
    return {action.dest: action for action in parser._actions if action.dest != 'help'}


def without_flags(arguments, dests, parser):
    """main.py's command-line `arguments` without the flags of `dests` and their values, each written as argparse
    reads it: --flag value, --flag=value, or an abbreviation of the flag (--tv_split_p 0.6)."""
    options = parser._option_string_actions
    kept, position = [], 0
    while position < len(arguments):
        argument = arguments[position]
        name, equals, _ = argument.partition('=')
        action = None
        if argument.startswith('--'):
            matches = [options[name]] if name in options else \
                [options[option] for option in options if option.startswith(name)]
            action = matches[0] if len({match.dest for match in matches}) == 1 else None
        if action is not None and action.dest in dests:
            takes_value = action.nargs != 0 and not equals
            position += 2 if takes_value else 1
            continue
        kept.append(argument)
        position += 1
    return kept


def parse_dimension(text, actions):
    """The Dimension of one FLAG=SPEC; a UserError saying what is wrong otherwise."""
    flag, separator, spec = text.partition('=')
    flag = flag.strip().removeprefix('--')
    if not separator or not flag or not spec:
        raise UserError(f'--space {text!r}: write FLAG=SPEC, e.g. kd_lambda=log:10:200 or loss=choice:margin,triplet')
    if flag not in actions:
        close = difflib.get_close_matches(flag, list(actions), n=3)
        hint = f' (did you mean {", ".join(close)}?)' if close else ''
        raise UserError(f'--space {text}: main.py has no flag --{flag}{hint}')
    if flag in NOT_SEARCHABLE:
        raise UserError(f'--space {text}: --{flag} says where data and runs are or is set by the search itself; '
                        f'give it as a plain flag of the base run instead')
    action = actions[flag]
    switch = isinstance(action, argparse._StoreTrueAction)
    kind, _, rest = spec.partition(':')
    if kind == 'choice':
        return Dimension(flag, 'choice', choices=tuple(choice_values(text, rest, action, switch)), switch=switch)
    if switch or action.nargs not in (None,) or action.choices:
        raise UserError(f'--space {text}: --{flag} takes {"no value" if switch else "one of its choices"}: '
                        f'search it as {flag}=choice:' + ('true,false' if switch else ','.join(map(str, action.choices
                                                                                                  or ['a', 'b']))))
    log = kind == 'log'
    bounds = rest if log else spec
    integer = action.type is int
    low, high = number_range(text, bounds, int if integer else float)
    if log and low <= 0:
        raise UserError(f'--space {text}: a log range needs low > 0, got {low}')
    return Dimension(flag, 'int' if integer else 'float', low=low, high=high, log=log)


def number_range(text, bounds, kind):
    """(low, high) of 'low:high' read as `kind`, low < high."""
    parts = bounds.split(':')
    if len(parts) != 2:
        raise UserError(f'--space {text}: a range is low:high or log:low:high, e.g. diffusion_w=0.5:0.999')
    try:
        low, high = (kind(part) for part in parts)
    except ValueError:
        raise UserError(f'--space {text}: {bounds} are not two {"integers" if kind is int else "numbers"}') from None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise UserError(f'--space {text}: the range {low}..{high} is empty; give low < high')
    return low, high


def choice_values(text, rest, action, switch):
    """The values of 'a,b,c' as the flag `action` reads them."""
    names = [name.strip() for name in rest.split(',')]
    if not rest or not all(names) or len(set(names)) != len(names):
        raise UserError(f'--space {text}: choice: lists distinct values separated by commas, e.g. choice:adam,adamw')
    if switch:
        values = {'true': True, 'false': False}
        if any(name.lower() not in values for name in names):
            raise UserError(f'--space {text}: --{action.dest} is on or off: choice:true,false')
        return [values[name.lower()] for name in names]
    values = []
    for name in names:
        try:
            value = action.type(name) if action.type else name
        except (TypeError, ValueError):
            raise UserError(f'--space {text}: {name!r} is not a value of --{action.dest}') from None
        if action.choices and value not in action.choices:
            raise UserError(f'--space {text}: {name!r} is not one of --{action.dest}\'s choices '
                            f'{", ".join(map(str, action.choices))}')
        values.append(value)
    return values


def parse_space(texts, actions, given):
    """The Dimensions of FLAG=SPEC `texts` (at least one, each flag once, none of the base run's `given` flags)."""
    if not texts:
        raise UserError('the search needs a space: --space FLAG=SPEC ... (e.g. kd_lambda=log:10:200) or --space_file')
    dimensions = [parse_dimension(text, actions) for text in texts]
    flags = [dimension.flag for dimension in dimensions]
    repeated = sorted({flag for flag in flags if flags.count(flag) > 1})
    if repeated:
        raise UserError(f'--space names --{repeated[0]} twice; give each flag once')
    both = sorted(set(flags) & set(given))
    if both:
        raise UserError(f'--{both[0]} is both a flag of the base run and searched; drop one of them')
    return dimensions
