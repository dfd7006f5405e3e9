"""YAML loading that remembers where every key came from, so errors can name a line.

Scenario files and ``--set`` values come from outside, so loading is bounded: nesting deeper
than :data:`MAX_DEPTH` and documents that expand (through aliases and merge keys) to more than
:data:`MAX_NODES` values are refused with the line where the limit was crossed, before they can
exhaust the stack or memory.
"""

import re
from dataclasses import dataclass

import yaml

MAX_DEPTH = 64  # a scenario is about 5 levels deep
MAX_NODES = 250_000  # about what a scenario file of the largest size (1 MiB) can hold without aliases

_MAP, _SEQ = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"


@dataclass(frozen=True)
class SourceProblem:
    line: int
    path: tuple
    message: str


class YamlSourceError(Exception):
    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


class _Loader(yaml.SafeLoader):
    """SafeLoader with bounds on nesting and expansion, and YAML 1.2's float forms."""

    def __init__(self, text):
        super().__init__(text)
        self.depth = 0
        self.budget = MAX_NODES

    def compose_node(self, parent, index):
        # The composer recurses once per level: stop before the interpreter's stack does.
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise YamlSourceError(self.peek_event().start_mark.line + 1, _too_deep())
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def spend(self, count: int, line: int) -> None:
        self.budget -= count
        if self.budget < 0:
            raise YamlSourceError(line, f"the document expands to more than {MAX_NODES:,} "
                                           "values (aliases and merge keys counted as expanded), the limit")

    def flatten_mapping(self, node):
        # Merge keys copy whole mappings: the pairs copied are counted here, level by level, since
        # each level of "<<: [*a, *a]" doubles the copy. A mapping is flattened in place, once.
        before = len(node.value)
        super().flatten_mapping(node)
        self.spend(max(len(node.value) - before, 0), node.start_mark.line + 1)


# YAML 1.1 reads 1e-5 and 3e-07 (no dot, or no exponent sign) as strings; a person, Python and
# YAML 1.2 read them as numbers, and hil prints its defaults that way.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _too_deep() -> str:
    return f"nested deeper than {MAX_DEPTH} levels, the limit"


def load(text: str):
    """Parse YAML into plain Python values.

    Returns ``(data, lines, problems)``: ``lines`` maps a key path (a tuple of mapping keys
    and list indices) to its 1-based line; ``problems`` lists duplicate keys, which plain
    YAML loading would silently overwrite. Raises :class:`YamlSourceError` on a syntax error,
    an unreadable value or a document beyond the limits.
    """
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as error:
        raise YamlSourceError(text.count("\n", 0, error.position) + 1, _reader_message(error)) from None
    try:
        node = loader.get_single_node()
    except yaml.reader.ReaderError as error:
        raise YamlSourceError(text.count("\n", 0, error.position) + 1, _reader_message(error)) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else 1
        raise YamlSourceError(line, f"{error.problem or error.context}") from None
    except yaml.YAMLError as error:
        raise YamlSourceError(1, " ".join(str(error).split())) from None
    finally:
        loader.dispose()
    lines: dict[tuple, int] = {(): 1}
    problems: list[SourceProblem] = []
    if node is None:
        return None, lines, problems
    try:
        data = _convert(loader, node, (), lines, problems, 1)
    except yaml.constructor.ConstructorError as error:
        mark = error.problem_mark
        raise YamlSourceError(mark.line + 1 if mark else 1, str(error.problem)) from None
    return data, lines, problems


def _reader_message(error) -> str:
    if isinstance(error.character, bytes):
        return f"the text is not {error.encoding}: {error.reason}"
    return f"character #x{error.character:04x} is not allowed in YAML"


def _convert(loader, node, path, lines, problems, depth):
    line = node.start_mark.line + 1
    # Past a limit, the top-level key names where: the nodes inside an alias carry the lines of
    # the anchor, not of the place that expands it.
    if depth > MAX_DEPTH:  # aliases nest documents inside each other beyond what the composer saw
        raise YamlSourceError(lines[path[:1]], _too_deep())
    loader.spend(1, lines[path[:1]])
    if isinstance(node, yaml.MappingNode):
        if node.tag != _MAP:
            raise YamlSourceError(line, f"the tag {node.tag!r} is not supported")
        loader.flatten_mapping(node)
        result = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlSourceError(key_node.start_mark.line + 1, "a key must be a plain value, "
                                                                    "not a list or a mapping")
            key = _scalar(loader, key_node)
            child = path + (key,)
            line = key_node.start_mark.line + 1
            if key in result:
                problems.append(SourceProblem(line, child, f"duplicate key (first at line {lines[child]})"))
                continue
            lines[child] = line
            result[key] = _convert(loader, value_node, child, lines, problems, depth + 1)
        return result
    if isinstance(node, yaml.SequenceNode):
        if node.tag != _SEQ:
            raise YamlSourceError(line, f"the tag {node.tag!r} is not supported")
        items = []
        for index, item in enumerate(node.value):
            lines[path + (index,)] = item.start_mark.line + 1
            items.append(_convert(loader, item, path + (index,), lines, problems, depth + 1))
        return items
    return _scalar(loader, node)


def _scalar(loader, node):
    try:
        return loader.construct_object(node, deep=True)
    except (ValueError, OverflowError) as error:  # an integer of thousands of digits, a bad date
        text = node.value if len(node.value) <= 40 else node.value[:37] + "..."
        raise YamlSourceError(node.start_mark.line + 1, f"{text!r} cannot be read: {error}") from None
