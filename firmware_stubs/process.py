"""Run a JAX controller of this package as a separate firmware process speaking the native protocol.

    python -m hil.firmware_stubs.quad_pid --udp 127.0.0.1:9000 --param NAME=V[,V...] ...
    python -m hil.firmware_stubs.quad_pid --port /dev/ttyUSB0 --baud 921600 ...

The process behaves as a board would (docs/protocol.md, sections 6, 7 and 9): it answers each
HELLO with its own, replies to every SENSORS with ACTUATORS for the same tick, reports phase
changes as STATUS, exits 0 on GOODBYE and 3 when nothing arrives for ``--idle-timeout`` s.
Once its step is compiled and it listens, it prints one line, ``<name>: ready on <link>``: hil
counts its HELLO timeout from then, not from a start that imports JAX first. Its parameters are
the command line's ``--param NAME=V[,V...]`` (``hil.firmware_stubs.command_line``): it compiles its
step before HELLO, so it does not ask hil for them as the C firmware does.
"""

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

from hil import jaxconfig, wire
from hil.firmware_stubs import parse_assignments
from hil.bridges.link import LinkError
from hil.bridges.serial_port import SerialLink
from hil.bridges.udp import UdpLink
from hil.pages import SharedInput, StatePages

PHASE_NAMES = ("waiting to arm", "armed, spinning up", "mission started", "landing", "landed, disarmed")


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--udp", metavar="HOST:PORT", help="bind here and talk to whoever sends HELLO")
    where.add_argument("--port", metavar="URL", help="serial port or pyserial URL")
    parser.add_argument("--baud", type=int, default=921600)
    parser.add_argument("--param", action="append", default=[], metavar="NAME=V[,V...]")
    parser.add_argument("--idle-timeout", type=float, default=10.0)
    return parser.parse_args(argv)


def main(controller, argv=None) -> None:
    jaxconfig.configure()  # before the controller's step is traced, and before JAX's backend starts
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    try:
        params = controller.params_from_wire(parse_assignments(args.param))
    except ValueError as error:
        sys.exit(f"{controller.__name__}: {error}")
    try:
        link = UdpLink(None, args.udp) if args.udp else SerialLink(args.port, args.baud)
    except LinkError as error:
        sys.exit(f"{controller.__name__}: {error}")
    sys.exit(serve(controller, params, link, args.idle_timeout))


def serve(controller, params, link, idle_timeout: float) -> int:
    """The firmware's main loop; returns the process exit status."""
    state = controller.init(params)
    step = CompiledStep(controller, params, state)
    print(f"{controller.__name__}: ready on {link.describe()}", flush=True)
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
            tick_rate = message.tick_rate_hz
            step.expect(message.sensors)
            send(wire.Hello, wire.PROTOCOL_VERSION, "firmware", "quadrotor", 4, 0,
                 tuple(wire.SensorSpec(name, size, 0.0) for name, size in controller.SENSOR_NEEDS))
        elif isinstance(message, wire.Sensors) and tick_rate:
            if not step.take(message):
                continue  # values do not match the mask: a bad frame, dropped
            command, phase = step(message.tick / tick_rate)
            send(wire.Actuators, message.tick, command)
            if phase != last_phase:
                send(wire.Status, message.tick, 1, PHASE_NAMES[phase])
                last_phase = phase
        elif isinstance(message, wire.Goodbye):
            return 0


def _phase(state) -> int | None:
    phase = getattr(state, "phase", None)
    return None if phase is None else int(phase)


class CompiledStep:
    """The controller's step, compiled once, with its state kept on the device as pages.

    Its inputs are one vector the host writes in place: every reading the controller needs
    (the last one received stays until a fresh one comes), a freshness flag per sensor, and
    the time. Its output is one vector: the four motor commands and the phase (-1 for a
    controller without phases). One argument and one result per call: each more costs a
    transfer.
    """

    def __init__(self, controller, params, state):
        needs = list(controller.SENSOR_NEEDS)
        self.spans, offset = {}, 0
        for name, size in needs:
            self.spans[name] = (offset, size)
            offset += size
        self.flags = {name: offset + index for index, (name, _) in enumerate(needs)}
        self.all_flags = slice(offset, offset + len(needs))
        self.inputs = SharedInput(offset + len(needs) + 1)
        self.layout: list = []  # hil's sensors: (fields, (span, flag) of a reading needed here, or None)
        pages = StatePages.of(state)

        def step(state, inputs):
            readings = {name: inputs[first:first + size] for name, (first, size) in self.spans.items()}
            fresh = {name: inputs[index] > 0.5 for name, index in self.flags.items()}
            new, command = controller.step(params, pages.unpack(state), readings, fresh, inputs[-1])
            phase = getattr(new, "phase", -1)
            return pages.pack(new), jnp.concatenate([command, jnp.reshape(phase, (1,)).astype(jnp.float64)])

        self.state = pages.pack(state)  # host pages first: the call copies them in
        self.call = jax.jit(step, donate_argnums=0).lower(self.state, self.inputs.host).compile()

    def expect(self, sensors: tuple[wire.SensorSpec, ...]) -> None:
        """Map hil's sensors (its HELLO) onto the inputs, once, not at every SENSORS."""
        self.layout = [(s.fields, (self.spans[s.name], self.flags[s.name])
                        if s.name in self.spans and self.spans[s.name][1] == s.fields else None) for s in sensors]

    def take(self, message: wire.Sensors) -> bool:
        """Store the message's fresh readings and flags; False (nothing stored) if the values do not fit the mask."""
        if message.fresh >> len(self.layout):
            return False  # a bit for a sensor hil never announced
        values, offset, fresh = message.values, 0, []
        for index, (size, target) in enumerate(self.layout):
            if message.fresh >> index & 1:
                if offset + size > len(values):
                    return False
                if target is not None:
                    fresh.append((target, values[offset:offset + size]))
                offset += size
        if offset != len(values):
            return False
        host = self.inputs.host
        host[self.all_flags] = 0.0
        for ((first, size), flag), reading in fresh:
            host[first:first + size] = reading
            host[flag] = 1.0
        return True

    def __call__(self, time: float) -> tuple[tuple[float, ...], int | None]:
        """Run the step at ``time`` (s); returns the motor commands and the phase (None if it has none)."""
        self.inputs.host[-1] = time
        self.state, out = self.call(self.state, self.inputs.argument())
        out = np.asarray(out).tolist()
        return tuple(out[:4]), None if out[4] < 0 else int(out[4])
