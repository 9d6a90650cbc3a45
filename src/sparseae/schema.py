"""The schema behind every configuration: typed dataclass fields with declared rules.

One generic check covers a configuration built in Python, from flags, or read
back from a file (config.json, a checkpoint's state.json): each field's type
comes from its annotation (`typing.get_type_hints`), anything else a value must
satisfy (a range, a set of choices) from its `param(...)` rule. `build` also
refuses unknown and missing keys of a parsed JSON object. Messages name the key
(dotted, e.g. `model.hidden`), the value and what is allowed; `in_file` puts the
file's name in front.
"""
from __future__ import annotations

import functools
import math
import numbers
import re
import reprlib
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from types import UnionType
from typing import Any, Iterator, Union, get_args, get_origin, get_type_hints

from .errors import SparseAEError


@dataclass(frozen=True)
class Rule:
    """What a value must be beyond its type; for a list, what each entry must be."""

    choices: tuple | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    finite: bool = True
    """Floats must be finite unless a field says otherwise."""
    nonempty: bool = False
    pattern: str | None = None
    """A regular expression a string must match in full, `what` in words."""
    what: str = ""

    def bounds(self) -> str:
        low = f"[{self.ge}" if self.ge is not None else f"({self.gt}" if self.gt is not None else ""
        high = f"{self.le}]" if self.le is not None else f"{self.lt})" if self.lt is not None else ""
        if low and high:
            return f"in {low}, {high}"
        if high:
            return f"<= {self.le}" if self.le is not None else f"< {self.lt}"
        if self.gt == 0:
            return "positive"
        return f">= {self.ge}" if self.ge is not None else f"> {self.gt}"

    def _within(self, v: Any) -> bool:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            return True
        # written so that NaN (every comparison False) is outside any bound
        return ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt))

    def check(self, key: str, value: Any) -> None:
        if value is None or isinstance(value, dict) or is_dataclass(value):
            return
        many = isinstance(value, list)
        if many and self.nonempty and not value:
            raise SparseAEError(f"{key} must not be empty; got []")
        for v in value if many else [value]:
            if isinstance(v, float) and self.finite and not math.isfinite(v):
                problem = "finite" if many else "a finite number"
            elif self.choices is not None and v not in self.choices:
                problem = f"one of {', '.join(map(str, self.choices))}"
            elif not self._within(v):
                problem = self.bounds()
            elif self.pattern is not None and not re.fullmatch(self.pattern, v):
                problem = self.what
            else:
                continue
            raise SparseAEError(f"{key}{' entries' if many else ''} must be {problem}; got {show(value)}")


NO_RULE = Rule()


def param(default: Any = MISSING, *, factory: Any = MISSING, **rule: Any) -> Any:
    """A dataclass field whose value must also satisfy `Rule(**rule)`; no default: a required key."""
    return field(default=default, default_factory=factory, metadata={"rule": Rule(**rule)})


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 2, 60, 60, 8, 4


def show(value: Any) -> str:
    """A value for an error message: short, one line, however large or deeply nested."""
    text = _REPR.repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _name(key: Any) -> str:
    """A key of a file's object for a one-line message (a newline in it stays escaped)."""
    return key if isinstance(key, str) and key.isprintable() else repr(key)


NoneType = type(None)
_SCALARS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_PLURALS = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
_NOT = object()  # "does not fit the type"


def describe(tp: Any) -> str:
    """An annotation in words: 'an integer or null', 'a list of integers'."""
    if tp is Any:
        return "any value"
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, UnionType):
        kinds = [a for a in args if a is not NoneType]
        text = "a number" if set(kinds) == {int, float} else " or ".join(describe(a) for a in kinds)
        return text + (" or null" if NoneType in args else "")
    if origin is list:
        return "a list of " + _PLURALS.get(args[0], "objects")
    if origin is dict or is_dataclass(tp):
        return "an object"
    return _SCALARS[tp]


def _plain(tp: Any) -> bool:
    """A scalar, or a list of scalars: checked as a whole and named by its own key."""
    return tp in _SCALARS or (get_origin(tp) is list and get_args(tp)[0] in _SCALARS)


def _plain_value(value: Any, tp: Any) -> Any:
    """`value` as the plain type `tp` wants it, or _NOT. A bool is not an int; an int is a float."""
    if get_origin(tp) is list:
        if not isinstance(value, (list, tuple)):
            return _NOT
        items = [_plain_value(v, get_args(tp)[0]) for v in value]
        return _NOT if any(v is _NOT for v in items) else items
    if tp is bool or isinstance(value, bool):
        return value if tp is bool and isinstance(value, bool) else _NOT
    if tp is int:
        return int(value) if isinstance(value, numbers.Integral) else _NOT
    if tp is float:
        if not isinstance(value, numbers.Real):
            return _NOT
        try:
            return float(value)
        except OverflowError:  # an integer beyond float range: refused as not finite
            return math.inf
    return value if isinstance(value, str) else _NOT


def _typed(value: Any, tp: Any, key: str) -> Any:
    """`value` checked against annotation `tp` (normalised: tuples become lists, ints floats)."""
    if tp is Any:
        return value
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, UnionType):
        if value is None and NoneType in args:
            return None
        kinds = [a for a in args if a is not NoneType]
        if len(kinds) == 1 and not _plain(kinds[0]):
            return _typed(value, kinds[0], key)  # errors inside an object name their own key
        for kind in kinds:
            if (got := _plain_value(value, kind)) is not _NOT:
                return got
    elif _plain(tp):
        if (got := _plain_value(value, tp)) is not _NOT:
            return got
    elif is_dataclass(tp):
        if isinstance(value, tp):
            check_fields(value, key)
            return value
        return build(tp, value, key)
    elif origin is dict and isinstance(value, dict):
        for k in value:
            if not isinstance(k, str):
                raise SparseAEError(f"{key} keys must be strings; got {show(k)}")
        return {k: _typed(v, args[1], f"{key}.{_name(k)}") for k, v in value.items()}
    elif origin is list and isinstance(value, (list, tuple)):
        return [_typed(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    raise SparseAEError(f"{key} must be {describe(tp)}; got {show(value)}")


@functools.cache
def _schema(cls: type) -> tuple[tuple[str, Any, Rule, bool], ...]:
    """(name, type, rule, required) of each field of dataclass `cls`."""
    hints = get_type_hints(cls)
    return tuple((f.name, hints[f.name], f.metadata.get("rule", NO_RULE),
                  f.default is MISSING and f.default_factory is MISSING) for f in fields(cls))


def _checked(value: Any, tp: Any, rule: Rule, key: str) -> Any:
    value = _typed(value, tp, key)
    rule.check(key, value)
    return value


def build(cls: type, data: Any, key: str = "") -> Any:
    """An instance of dataclass `cls` from a parsed JSON object, every value checked against the
    field's type and rule; unknown keys and missing required ones are refused. `key` is where the
    object sits (e.g. 'model'), for the messages."""
    schema = _schema(cls)
    names = [s[0] for s in schema]
    if not isinstance(data, dict):
        keys = f" with keys {', '.join(names)}" if len(names) <= 4 else ""
        raise SparseAEError(f"{key or 'the top level'} must be an object{keys}; got {show(data)}")
    prefix = f"{key}." if key else ""
    for k, v in data.items():
        if k not in names:
            import difflib  # only on this error path

            close = difflib.get_close_matches(str(k), names, n=1, cutoff=0.8)
            hint = f"did you mean {prefix}{close[0]}?" if close else f"allowed: {', '.join(names)}"
            raise SparseAEError(f"unknown key {prefix}{_name(k)} (value {show(v)}); {hint}")
    values = {}
    for name, tp, rule, required in schema:
        if name in data:
            values[name] = _checked(data[name], tp, rule, prefix + name)
        elif required:
            raise SparseAEError(f"missing key {prefix}{name} ({describe(tp)})")
    return cls(**values)


def check_fields(obj: Any, key: str = "") -> None:
    """Check every field of dataclass `obj` against its type and rule, normalising in place (an int
    given for a float becomes a float, a tuple for a list a list). `key`: where `obj` sits, e.g. 'model'."""
    prefix = f"{key}." if key else ""
    for name, tp, rule, _ in _schema(type(obj)):
        setattr(obj, name, _checked(getattr(obj, name), tp, rule, prefix + name))


@contextmanager
def in_file(path: Any) -> Iterator[None]:
    """Errors raised inside name the file they are about first."""
    try:
        yield
    except SparseAEError as e:
        raise SparseAEError(f"{path}: {e}") from None


def check_choice(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise SparseAEError(f"{key} must be one of {', '.join(map(str, allowed))}; got {show(value)}")
