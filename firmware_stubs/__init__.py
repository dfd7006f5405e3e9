"""Emulated flight controllers that CI flies: pure JAX controllers that see only the sensor packet.

A firmware module gives its parameters as ``wire_parameters(params)``: (name, values) pairs, what
hil sends in PARAM messages to a firmware whose HELLO asks for its ``PARAMETER_SET``, and what a
firmware process takes on its command line as ``--param NAME=V[,V...]`` (:func:`command_line`).
``params_from_wire(pairs)`` is the inverse.
"""


def command_line(pairs) -> list[str]:
    """``--param NAME=V[,V...]`` for each (name, values) pair, numbers in full ``repr`` precision."""
    return [word for name, values in pairs for word in ("--param", f"{name}=" + ",".join(map(repr, values)))]


def parse_assignments(assignments: list[str]) -> list[tuple[str, tuple[float, ...]]]:
    """``NAME=V[,V...]`` strings (the values of ``--param``) as (name, values) pairs; ValueError names the bad one."""
    pairs = []
    for text in assignments:
        name, equals, numbers = text.partition("=")
        try:
            if not name or not equals:
                raise ValueError
            pairs.append((name, tuple(float(v) for v in numbers.split(","))))
        except ValueError:
            raise ValueError(f"--param {text!r}: expected NAME=V[,V...]") from None
    return pairs
