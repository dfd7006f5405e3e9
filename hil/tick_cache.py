"""A cache of traced ticks, so a warm start skips Python tracing and lowering.

JAX's persistent compilation cache skips XLA compilation, but tracing and lowering the tick
still cost about 0.7 s per start (a sweep's program, a loop of the tick over its members with
their expectations, about 2 s). Here the lowered tick is kept as a serialised ``jax.export``
module, keyed by everything that shapes it: the tick's structure and the shapes of its parameters
(never their values: :mod:`hil.tick.params`), the source of hil itself, and the JAX version and flags. Any failure to read an entry falls
back to tracing, so a stale or damaged cache costs time, never correctness.
"""

import functools
import hashlib
import logging
import os
import time
from pathlib import Path

import jax
from jax import export

from hil.jaxconfig import CacheDirectoryError, cache_directory

log = logging.getLogger(__name__)


@functools.cache
def _source_digest() -> bytes:
    """hil's source as this process first read it: a file edited after that is not the code this
    process traces, and must not name what it stores."""
    import hil
    import hil.bridges
    import hil.firmware_stubs
    import hil.models
    import hil.tick
    digest = hashlib.sha256()
    for package in (hil, hil.models, hil.bridges, hil.firmware_stubs, hil.tick):
        for path in sorted(Path(package.__file__).parent.glob("*.py")):
            digest.update(path.name.encode() + path.read_bytes())
    return digest.digest()


def key(program: str) -> str:
    """The cache name of ``program`` (a digest of what shapes it), with hil's source and JAX's
    version, flags and backend, which shape every program."""
    digest = hashlib.sha256(_source_digest())
    digest.update(program.encode())
    digest.update(f"{jax.__version__} {os.environ.get('XLA_FLAGS', '')} {jax.default_backend()}".encode())
    return digest.hexdigest()


def _path(name: str) -> Path:
    return cache_directory("ticks") / f"{name}.jaxexport"


def has(name: str) -> bool:
    try:
        return _path(name).is_file()
    except (OSError, CacheDirectoryError):
        return False


def load(name: str):
    """The cached exported tick, or None (also when the cache directory is not private)."""
    try:
        return export.deserialize(bytearray(_path(name).read_bytes()))
    except (OSError, ValueError, RuntimeError):  # CacheDirectoryError is a RuntimeError
        return None


def exported(function, arguments, name: str, custom_call: str | None = None,
             what: str = "the tick") -> export.Exported:
    """``function`` (a pure function of ``arguments``: arrays or their shapes) as exported under
    ``name`` (:func:`key`): loaded from the cache, or traced, exported and stored. ``custom_call``:
    the one FFI target it may call; ``what``: the program, as the log at INFO names it."""
    started = time.perf_counter()
    found = load(name)
    if found is None:
        checks = [export.DisabledSafetyCheck.custom_call(custom_call)] if custom_call else []
        found = export.export(jax.jit(function), disabled_checks=checks)(*arguments)
        store(name, found)
        log.info("%s: traced and lowered in %.1f s", what, time.perf_counter() - started)
    else:
        log.info("%s: loaded from the traced-tick cache in %.1f s", what, time.perf_counter() - started)
    return found


def store(name: str, exported) -> None:
    try:
        path = _path(name)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(exported.serialize())
        partial.replace(path)  # atomic: a concurrent reader sees the old file or the new one
    except (OSError, CacheDirectoryError):
        pass  # a read-only or refused cache only costs start-up time
