"""YAML loading that remembers where every key came from, so errors can name a line."""

from dataclasses import dataclass

import yaml


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


def load(text: str):
    """Parse YAML into plain Python values.

    Returns ``(data, lines, problems)``: ``lines`` maps a key path (a tuple of mapping keys
    and list indices) to its 1-based line; ``problems`` lists duplicate keys, which plain
    YAML loading would silently overwrite. Raises :class:`YamlSourceError` on a syntax error.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else 1
        raise YamlSourceError(line, f"{error.problem or error.context}") from None
    except yaml.YAMLError as error:
        raise YamlSourceError(1, str(error)) from None
    finally:
        loader.dispose()
    lines: dict[tuple, int] = {(): 1}
    problems: list[SourceProblem] = []
    if node is None:
        return None, lines, problems
    try:
        data = _convert(loader, node, (), lines, problems)
    except yaml.constructor.ConstructorError as error:
        mark = error.problem_mark
        raise YamlSourceError(mark.line + 1 if mark else 1, str(error.problem)) from None
    return data, lines, problems


def _convert(loader, node, path, lines, problems):
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            child = path + (key,)
            line = key_node.start_mark.line + 1
            if key in result:
                problems.append(SourceProblem(line, child, f"duplicate key (first at line {lines[child]})"))
                continue
            lines[child] = line
            result[key] = _convert(loader, value_node, child, lines, problems)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            lines[path + (index,)] = item.start_mark.line + 1
            items.append(_convert(loader, item, path + (index,), lines, problems))
        return items
    return loader.construct_object(node, deep=True)
