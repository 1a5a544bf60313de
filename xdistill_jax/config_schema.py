"""Validation of `ml_collections` configs before anything is compiled.

Every error names the field (as `config.FIELD`) and the values it accepts.
"""

import difflib
import numbers
from collections.abc import Iterable, Sequence

import ml_collections


class ConfigError(ValueError):
  """An invalid or misspelt config field."""


def _get(config, field: str):
  node = config
  for part in field.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise ConfigError(f'config.{field} is missing; every config of this experiment sets it '
                        '(start from its file in configs/).')
    node = node[part]
  return node


def _fail(field: str, value, allowed: str):
  raise ConfigError(f'config.{field}={value!r} is invalid; allowed: {allowed}.')


def known_fields(config: ml_collections.ConfigDict, allowed: Iterable[str]) -> None:
  """Rejects fields that are not in `allowed` (dotted names), suggesting the closest one."""
  allowed = set(allowed)
  for field in _flatten_names(config):
    if field not in allowed:
      raise ConfigError(
          f'config.{field} is not a field of this experiment.{did_you_mean(field, allowed)} '
          f'Known fields: {", ".join(sorted(allowed))}.')


def did_you_mean(field: str, allowed: Iterable[str]) -> str:
  """' Did you mean config.X?' for the closest of `allowed` to `field`, or ''."""
  close = difflib.get_close_matches(field, sorted(allowed), n=1)
  return f' Did you mean config.{close[0]}?' if close else ''


def unknown_override(config: ml_collections.ConfigDict, field: str) -> str | None:
  """If the dotted `field` is not in `config`, the message naming it and its closest match."""
  node = config
  for part in field.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      names = list(_flatten_names(config))
      return f'config.{field} is not a field of this config.{did_you_mean(field, names)}'
    node = node[part]
  return None


def _flatten_names(config, prefix=''):
  for name, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _flatten_names(value, f'{prefix}{name}.')
    else:
      yield f'{prefix}{name}'


def integer(config, field: str, low: int | None = None, high: int | None = None) -> int:
  """An integer in [low, high]."""
  value = _get(config, field)
  ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
  ok = ok and (low is None or value >= low) and (high is None or value <= high)
  if not ok:
    _fail(field, value, 'an integer in ' + _range(low, high))
  return value


def number(config, field: str, low: float | None = None, high: float | None = None,
           low_open: bool = False) -> float:
  """A real number in [low, high] (or (low, high] with `low_open`)."""
  value = _get(config, field)
  ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
  if ok and low is not None:
    ok = value > low if low_open else value >= low
  ok = ok and (high is None or value <= high)
  if not ok:
    _fail(field, value, 'a number in ' + _range(low, high, low_open))
  return value


def boolean(config, field: str) -> bool:
  value = _get(config, field)
  if not isinstance(value, bool):
    _fail(field, value, 'True or False')
  return value


def choice(config, field: str, options: Sequence) -> object:
  """One of `options`."""
  value = _get(config, field)
  if value not in options:
    _fail(field, value, 'one of ' + ', '.join(map(repr, options)))
  return value


def integer_list(config, field: str, low: int | None = None, high: int | None = None,
                 unique: bool = True) -> list[int]:
  """A non-empty list of distinct integers in [low, high]."""
  values = _get(config, field)
  allowed = (f'a non-empty list of {"distinct " if unique else ""}integers in '
             + _range(low, high))
  if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
    _fail(field, values, allowed)
  values = list(values)
  ok = bool(values) and all(
      isinstance(v, numbers.Integral) and not isinstance(v, bool)
      and (low is None or v >= low) and (high is None or v <= high) for v in values)
  if not ok or (unique and len(set(values)) != len(values)):
    _fail(field, values, allowed)
  return values


def number_list(config, field: str, low: float | None = None, high: float | None = None) -> list:
  """A non-empty list of distinct real numbers in [low, high]."""
  values = _get(config, field)
  allowed = 'a non-empty list of distinct numbers in ' + _range(low, high)
  if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
    _fail(field, values, allowed)
  values = list(values)
  ok = bool(values) and len(set(values)) == len(values) and all(
      isinstance(v, numbers.Real) and not isinstance(v, bool)
      and (low is None or v >= low) and (high is None or v <= high) for v in values)
  if not ok:
    _fail(field, values, allowed)
  return values


def choice_list(config, field: str, options: Sequence) -> list:
  """A non-empty list of distinct members of `options`."""
  values = _get(config, field)
  allowed = 'a non-empty list of distinct values from ' + ', '.join(map(repr, options))
  if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
    _fail(field, values, allowed)
  values = list(values)
  if not values or len(set(values)) != len(values) or any(v not in options for v in values):
    _fail(field, values, allowed)
  return values


def _range(low, high, low_open=False) -> str:
  low = '-inf' if low is None else low
  high = 'inf' if high is None else high
  return f'{"(" if low_open else "["}{low}, {high}]'
