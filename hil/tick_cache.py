"""A cache of traced ticks, so a warm start skips Python tracing and lowering.

JAX's persistent compilation cache skips XLA compilation, but tracing and lowering the tick
still cost about 0.7 s per start. Here the lowered tick is kept as a serialised ``jax.export``
module, keyed by everything that shapes it: the parts of the scenario it reads, whether the firmware runs in-process,
the source of hil itself, and the JAX version and flags. Any failure to read an entry falls
back to tracing, so a stale or damaged cache costs time, never correctness.
"""

import hashlib
import os
from pathlib import Path

import jax
from jax import export

from hil.jaxconfig import CacheDirectoryError, cache_directory


def _source_digest() -> bytes:
    import hil
    import hil.bridges
    import hil.firmware_stubs
    import hil.models
    digest = hashlib.sha256()
    for package in (hil, hil.models, hil.bridges, hil.firmware_stubs):
        for path in sorted(Path(package.__file__).parent.glob("*.py")):
            digest.update(path.name.encode() + path.read_bytes())
    return digest.digest()


def key(scenario, in_process: bool) -> str:
    """Only what the traced tick depends on: not the expectations, the run's length (unless a fault
    lasts to its end), the link settings, the pilot, or a firmware that flies outside the tick."""
    shaping = [scenario.seed, scenario.physics, scenario.vehicle, scenario.initial, scenario.environment,
               scenario.sensors, scenario.faults]
    if scenario.faults:
        shaping.append(scenario.ticks)
    if in_process:
        shaping.append(scenario.firmware)
    digest = hashlib.sha256(_source_digest())
    digest.update(repr(shaping).encode())
    digest.update(f"{in_process} {jax.__version__} {os.environ.get('XLA_FLAGS', '')} {jax.default_backend()}".encode())
    return digest.hexdigest()


def _path(name: str) -> Path:
    return cache_directory("ticks") / f"{name}.jaxexport"


def load(name: str):
    """The cached exported tick, or None (also when the cache directory is not private)."""
    try:
        return export.deserialize(bytearray(_path(name).read_bytes()))
    except (OSError, ValueError, RuntimeError):  # CacheDirectoryError is a RuntimeError
        return None


def store(name: str, exported) -> None:
    try:
        path = _path(name)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(exported.serialize())
        partial.replace(path)  # atomic: a concurrent reader sees the old file or the new one
    except (OSError, CacheDirectoryError):
        pass  # a read-only or refused cache only costs start-up time
