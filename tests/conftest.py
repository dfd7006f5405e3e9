"""Every test runs with the JAX settings hil's entry points apply, set before any test imports a
model or traces anything (XLA_FLAGS is read when JAX's backend starts)."""

import pytest
import yaml
from support import SCENARIOS

from hil import jaxconfig

jaxconfig.configure()


@pytest.fixture
def scenario_file(tmp_path):
    """Write a shipped scenario with some keys changed; returns the new file's path."""

    def make(base: str, name: str = "variant.yaml", **changes):
        data = yaml.safe_load((SCENARIOS / base).read_text())
        for dotted, value in changes.items():
            node = data
            *parents, last = dotted.split("__")
            for key in parents:
                node = node.setdefault(key, {})
            if value is None:
                node.pop(last, None)
            else:
                node[last] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return make
