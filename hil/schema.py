"""A small declarative schema: frozen dataclasses whose fields carry units, bounds and help.

``parse(cls, data, lines)`` turns plain YAML values into a dataclass tree, or collects every
problem it finds (unknown key with the nearest valid one, wrong type, missing field, value out
of bounds) with the key path and the line it came from.
"""

import dataclasses
import difflib
import functools
import math
import types
import typing
import unicodedata
from dataclasses import dataclass


def spec(default=dataclasses.MISSING, *, unit="", help="", gt=None, ge=None, lt=None, le=None, factory=None):
    """A schema field: its default, unit, help text and bounds on its value (or on each element)."""
    metadata = {"unit": unit, "help": help, "gt": gt, "ge": ge, "lt": lt, "le": le}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Problem:
    path: tuple
    message: str


def format_path(path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


class Check:
    """Collects problems while a tree is parsed; classes add their own with ``__check__``."""

    def __init__(self):
        self.problems: list[Problem] = []

    def fail(self, path, message):
        self.problems.append(Problem(tuple(path), message))


def parse(cls, data, check: Check, path=()):
    """Parse ``data`` as ``cls``; returns ``None`` where it recorded a problem."""
    return _parse_type(cls, data, check, path, {})


def parse_field(cls, name: str, value, check: Check, path):
    """Parse ``value`` as field ``name`` of ``cls``, with its type and bounds (a value given outside the file)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return _parse_type(_hints(cls)[name], value, check, path, field.metadata)


@functools.cache
def _hints(cls) -> dict:
    """A schema class's field types: resolving them is most of the cost of checking a value, and a
    sweep checks thousands of members' changes."""
    return typing.get_type_hints(cls)


_TYPE_NAMES = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}


def _describe(tp) -> str:
    if tp in _TYPE_NAMES:
        return _TYPE_NAMES[tp]
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) if a is not type(None) else "null" for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {len(typing.get_args(tp))} numbers"
    if origin is list:
        (item,) = typing.get_args(tp)
        return f"a list of {_describe(item).replace('a mapping', 'mappings')}"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return str(tp)


def _parse_type(tp, value, check, path, meta):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _parse_type(options[0], value, check, path, meta)
    if dataclasses.is_dataclass(tp):
        return _parse_dataclass(tp, value, check, path)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            hint = _nearest(str(value), [str(a) for a in allowed])
            check.fail(path, f"{value!r} is not {_describe(tp)}{hint}")
            return None
        return value
    if origin is tuple:
        items = typing.get_args(tp)
        if not isinstance(value, list) or len(value) != len(items):
            check.fail(path, f"expected {_describe(tp)}, got {value!r}")
            return None
        parsed = [_parse_type(t, v, check, path + (i,), meta) for i, (t, v) in enumerate(zip(items, value))]
        return None if any(p is None for p in parsed) else tuple(parsed)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            check.fail(path, f"expected a list, got {value!r}")
            return None
        parsed = [_parse_type(item, v, check, path + (i,), meta) for i, v in enumerate(value)]
        return None if any(p is None for p in parsed) else parsed
    return _parse_scalar(tp, value, check, path, meta)


def _parse_scalar(tp, value, check, path, meta):
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            check.fail(path, f"expected a number, got {value!r}")
            return None
        value = float(value)
        if not math.isfinite(value):
            check.fail(path, f"expected a finite number, got {value!r}")
            return None
    elif tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # 1e3 and 1000.0 are how people write a whole number too
        if isinstance(value, bool) or not isinstance(value, int):
            check.fail(path, f"expected an integer, got {value!r}")
            return None
    elif tp is bool:
        if not isinstance(value, bool):
            check.fail(path, f"expected true or false, got {value!r}")
            return None
        return value
    elif tp is str:
        if not isinstance(value, str):
            check.fail(path, f"expected a string, got {value!r}")
            return None
        control = next((c for c in value if unicodedata.category(c) == "Cc" and c not in "\n\t"), None)
        if control is not None:
            check.fail(path, f"contains the control character {control!r}")
            return None
        return value
    for key, test, words in (("gt", lambda v, b: v > b, "greater than"), ("ge", lambda v, b: v >= b, "at least"),
                             ("lt", lambda v, b: v < b, "less than"), ("le", lambda v, b: v <= b, "at most")):
        bound = meta.get(key)
        if bound is not None and not test(value, bound):
            unit = f" {meta['unit']}" if meta.get("unit") else ""
            check.fail(path, f"must be {words} {bound}{unit}, got {value}")
            return None
    return value


def _nearest(word, candidates) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _parse_dataclass(cls, value, check, path):
    if not isinstance(value, dict):
        check.fail(path, f"expected a mapping, got {value!r}")
        return None
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("internal")}
    for key in value:
        if key not in fields:
            check.fail(path + (key,), f"unknown key{_nearest(str(key), list(fields))}; valid keys: {', '.join(fields)}")
    before = len(check.problems)
    kwargs = {}
    for name, field in fields.items():
        if name in value:
            kwargs[name] = _parse_type(hints[name], value[name], check, path + (name,), field.metadata)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            check.fail(path + (name,), f"missing required field ({_describe(hints[name])}"
                       + (f", {field.metadata['unit']}" if field.metadata.get("unit") else "") + ")")
    if len(check.problems) > before:
        return None
    instance = cls(**kwargs)
    validate = getattr(instance, "__check__", None)
    if validate is not None:
        validate(check, path)
    return instance


def reference(cls, title: str) -> str:
    """Markdown tables of every field of ``cls`` and the sections under it: the file format reference."""
    sections, seen = [], set()

    def visit(section, heading):
        if section in seen:
            return
        seen.add(section)
        hints = _hints(section)
        rows, children = [], []
        for field in dataclasses.fields(section):
            if not field.init or field.metadata.get("internal"):
                continue
            tp = hints[field.name]
            nested = [a for a in (typing.get_args(tp) or (tp,)) if dataclasses.is_dataclass(a)]
            nested += [a for arg in typing.get_args(tp) for a in typing.get_args(arg) if dataclasses.is_dataclass(a)]
            for child in nested:
                children.append((child, f"{heading}.{field.name}" if heading else field.name))
            if field.default is not dataclasses.MISSING:
                value = list(field.default) if isinstance(field.default, tuple) else field.default
                default = "—" if value is None else ('`""`' if value == "" else f"`{value!r}`".replace("'", ""))
            elif field.default_factory is not dataclasses.MISSING:
                made = field.default_factory()
                default = "`[]`" if made == [] else "(section)"
            else:
                default = "**required**"
            meta = field.metadata
            bounds = ", ".join(f"{words} {meta[k]}" for k, words in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))
                               if meta.get(k) is not None)
            rows.append(f"| `{field.name}` | {_describe(tp)} | {meta.get('unit', '')} | {default} | "
                        f"{'; '.join(x for x in (meta.get('help', ''), bounds) if x)} |")
        sections.append(f"### `{heading or title}`\n\n| key | type | unit | default | notes |\n| --- | --- | --- | --- | --- |\n"
                        + "\n".join(rows) + "\n")
        for child, name in children:
            visit(child, name)

    visit(cls, "")
    return "\n".join(sections)
