"""Frozen dataclasses that JAX treats as pytrees."""

import dataclasses

import jax


def pytree(cls):
    """Make ``cls`` a frozen dataclass and register it with JAX.

    Fields declared with ``static(...)`` are compile-time metadata (shapes, flags); every
    other field is a leaf that may be an array.
    """
    cls = dataclasses.dataclass(frozen=True)(cls)
    fields = dataclasses.fields(cls)
    data = [f.name for f in fields if not f.metadata.get("static")]
    meta = [f.name for f in fields if f.metadata.get("static")]
    return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=meta)


def static(default=dataclasses.MISSING):
    """A dataclass field that is part of the pytree's structure, not a traced leaf."""
    return dataclasses.field(default=default, metadata={"static": True})


replace = dataclasses.replace
