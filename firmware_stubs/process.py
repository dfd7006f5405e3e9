"""Run a JAX controller of this package as a separate firmware process speaking the native protocol.

    python -m hil.firmware_stubs.quad_pid --udp 127.0.0.1:9000 --param ... --waypoint ...
    python -m hil.firmware_stubs.quad_pid --port /dev/ttyUSB0 --baud 921600 ...

The process behaves as a board would (docs/protocol.md, sections 6, 7 and 9): it answers each
HELLO with its own, replies to every SENSORS with ACTUATORS for the same tick, reports phase
changes as STATUS, exits 0 on GOODBYE and 3 when nothing arrives for ``--idle-timeout`` s.
"""

import argparse
import sys

import jax
import numpy as np

from hil import wire
from hil.bridges.link import LinkError
from hil.bridges.serial_port import SerialLink
from hil.bridges.udp import UdpLink

PHASE_NAMES = ("waiting to arm", "armed, spinning up", "mission started", "landing", "landed, disarmed")


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--udp", metavar="HOST:PORT", help="bind here and talk to whoever sends HELLO")
    where.add_argument("--port", metavar="URL", help="serial port or pyserial URL")
    parser.add_argument("--baud", type=int, default=921600)
    parser.add_argument("--param", action="append", default=[], metavar="NAME=V[,V...]")
    parser.add_argument("--waypoint", action="append", default=[], metavar="N,E,D,YAW_RAD,HOLD_S")
    parser.add_argument("--land", action="store_true")
    parser.add_argument("--idle-timeout", type=float, default=10.0)
    return parser.parse_args(argv)


def main(controller, argv=None) -> None:
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    try:
        params = controller.params_from_command_line(args.param, args.waypoint, args.land)
    except ValueError as error:
        sys.exit(f"{controller.__name__}: {error}")
    try:
        link = UdpLink(None, args.udp) if args.udp else SerialLink(args.port, args.baud)
    except LinkError as error:
        sys.exit(f"{controller.__name__}: {error}")
    sys.exit(serve(controller, params, link, args.idle_timeout))


def serve(controller, params, link, idle_timeout: float) -> int:
    """The firmware's main loop; returns the process exit status."""
    needs = dict(controller.SENSOR_NEEDS)
    state = controller.init(params)
    readings = {name: np.zeros(size) for name, size in needs.items()}
    step = None
    layout: list[tuple[str, int]] = []
    tick_rate = 0
    seq = 1  # 0 belongs to HELLO, which never advances the counter
    last_phase = _phase(state)

    def send(message_type, *fields):
        nonlocal seq
        if message_type is wire.Hello:
            link.send(wire.Hello(0, *fields))
            return
        link.send(message_type(seq, *fields))
        seq = seq % (wire.UINT32 - 1) + 1

    while True:
        message = link.receive(idle_timeout)
        if message is None:
            print(f"{controller.__name__}: nothing received for {idle_timeout} s on {link.describe()}; exiting",
                  file=sys.stderr)
            return 3
        if isinstance(message, wire.Hello):
            if message.version != wire.PROTOCOL_VERSION:
                send(wire.Goodbye, 0, wire.GOODBYE_VERSION_MISMATCH,
                     f"protocol version: hil speaks {message.version}, firmware {wire.PROTOCOL_VERSION}")
                return 1
            layout = [(s.name, s.fields) for s in message.sensors]
            tick_rate = message.tick_rate_hz
            if step is None:  # before answering: hil starts ticking as soon as our HELLO arrives
                step = _compile(controller, params, state, readings)
            send(wire.Hello, wire.PROTOCOL_VERSION, "firmware", "quadrotor", 4, 0,
                 tuple(wire.SensorSpec(name, size, 0.0) for name, size in controller.SENSOR_NEEDS))
        elif isinstance(message, wire.Sensors) and step is not None and tick_rate:
            fresh = _unpack(message, layout, readings)
            if fresh is None:
                continue  # values do not match the mask: a bad frame, dropped
            state, command = step(state, readings, fresh,
                                  np.float64(message.tick / tick_rate))
            send(wire.Actuators, message.tick, tuple(float(c) for c in np.asarray(command)))
            phase = _phase(state)
            if phase != last_phase:
                send(wire.Status, message.tick, 1, PHASE_NAMES[phase])
                last_phase = phase
        elif isinstance(message, wire.Goodbye):
            return 0


def _phase(state) -> int | None:
    phase = getattr(state, "phase", None)
    return None if phase is None else int(phase)


def _unpack(message: wire.Sensors, layout, readings):
    """Store the fresh readings; returns the freshness flags, or None if the values do not fit the mask."""
    fresh = {name: False for name in readings}
    offset = 0
    values = message.values
    if message.fresh >> len(layout):
        return None  # a bit for a sensor hil never announced
    for index, (name, size) in enumerate(layout):
        if message.fresh >> index & 1:
            if offset + size > len(values):
                return None
            if name in readings and readings[name].size == size:
                readings[name] = np.asarray(values[offset:offset + size], dtype=np.float64)
                fresh[name] = True
            offset += size
    return fresh if offset == len(values) else None


def _compile(controller, params, state, readings):
    """The controller's step, compiled once for these shapes."""
    fresh = {name: np.bool_(True) for name in readings}
    compiled = jax.jit(lambda s, r, f, t: controller.step(params, s, r, f, t)).lower(
        state, readings, fresh, np.float64(0.0)).compile()
    return lambda s, r, f, t: compiled(s, r, {k: np.bool_(v) for k, v in f.items()}, t)
