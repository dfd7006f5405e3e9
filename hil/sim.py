"""The compiled programs of the tick: one tick per call, many per call, and many with the lockstep
exchange inside; each takes the tick's parameters as an argument.

:class:`Simulation` turns a scenario into its structure and parameters (:mod:`hil.tick.params`)
and compiles :meth:`hil.tick.Tick.step` as one call per tick (:meth:`Simulation.compile`: real
time, and lockstep without the compiled exchange), as a loop of many ticks per call
(:meth:`Simulation.compile_batch`: in-process runs and replay), or as a loop with the lockstep
exchange inside (:meth:`Simulation.compile_exchange_loop`). A program is keyed on the structure
alone: the traced-tick cache (:mod:`hil.tick_cache`) keeps it across processes and
:data:`PROGRAMS` within one, so a new seed or a changed mass or gain flies at once.

A program's state and parameters travel as a few float64 pages (:class:`hil.pages.StatePages`);
the parameters are put on the device once per run. Each tick returns the new state (kept on the
device) and one flat float64 row for the host whose layout is :attr:`Simulation.layout`.
"""

import collections
import hashlib
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hil import jaxconfig, tick_cache
from hil.bridges import compiled_exchange
from hil.pages import SharedInput, StatePages
from hil.scenario import Scenario
from hil.tick import MOTORS, SimState, Tick, firmware
from hil.tick import params as tick_params

PROGRAMS_KEPT = 16  # compiled programs a process keeps, most recently used first


def rest_height(scenario: Scenario) -> float:
    """Down coordinate of the centre of mass resting on its feet: touching, plus the static sag."""
    gear = scenario.vehicle.landing_gear
    return tick_params.resting_height(scenario.vehicle.mass, gear.foot_depth, gear.stiffness)


class Simulation:
    """A scenario's tick: its structure, its parameters, and the programs compiled for its structure."""

    def __init__(self, scenario: Scenario, in_process_firmware: bool = True):
        jaxconfig.configure()
        self.scenario = scenario
        self.structure, self.params = tick_params.build(scenario, in_process_firmware)
        self.tick = Tick(self.structure)
        self.rate = self.structure.rate
        self.dt = self.structure.dt
        self.in_process = in_process_firmware
        self.sensors = self.structure.sensors
        self.layout = self.tick.layout
        self.width = self.tick.width

    def initial_state(self) -> SimState:
        return self.tick.init(self.params)

    def program_name(self, kind: str) -> str:
        """The name a program of this structure is cached under: the structure, the shapes of the
        parameters, hil's source and JAX's version and settings; never a parameter's value."""
        leaves, treedef = jax.tree_util.tree_flatten(self.params)
        shapes = [(np.shape(leaf), np.asarray(leaf).dtype.str) for leaf in leaves]
        digest = hashlib.sha256(repr((self.structure, str(treedef), shapes, kind)).encode())
        return tick_cache.key(digest.hexdigest())

    def compiled(self, kind: str) -> bool:
        """Whether a program of this kind for this structure is ready or cached (else it compiles)."""
        name = self.program_name(kind)
        return name in PROGRAMS or tick_cache.has(name)

    def compile(self) -> "CompiledTick":
        """Lower and compile the tick for this structure, before tick 0."""
        pages, initial, param_pages = self._pages()

        def advance(state, params, *command):
            new, out = self.tick.step(param_pages.unpack(params), pages.unpack(state), *command)
            return pages.pack(new), out

        command = () if self.in_process else (np.zeros(MOTORS),)
        params = param_pages.pack(self.params)
        compiled = _compiled(advance, (initial, params, *command), self.program_name("tick"),
                             firmware.custom_call(self.structure))
        return CompiledTick(compiled, pages, initial, _on_device(params),
                            None if self.in_process else SharedInput(MOTORS))

    def compile_batch(self, batch: int) -> "CompiledBatch":
        """Up to ``batch`` ticks per call: in link mode each with its own command (replay), or
        in-process, the firmware answering inside the tick (an in-process run).

        The compiled function takes (state, params, commands (batch, MOTORS), n) in link mode and
        (state, params, n) in-process, and returns the state after n ticks and their rows (the rest
        zero). The number of ticks is an argument, so the loop cannot be unrolled or specialised,
        and XLA compiles one tick as the loop's body, which computes what the single compiled tick
        computes, bit for bit (replay checks every row).
        """
        pages, initial, param_pages = self._pages()

        def advance_many(state, params, *commands_and_n):
            *commands, n = commands_and_n
            unpacked = param_pages.unpack(params)

            def one(index, carry):
                state, rows = carry
                new, out = self.tick.step(unpacked, pages.unpack(state), *(c[index] for c in commands))
                return pages.pack(new), jax.lax.dynamic_update_slice(rows, out[None, :], (index, jnp.zeros_like(index)))

            return jax.lax.fori_loop(0, n, one, (state, jnp.zeros((batch, self.width))))

        commands = () if self.in_process else (np.zeros((batch, MOTORS)),)
        params = param_pages.pack(self.params)
        program = _compiled(advance_many, (initial, params, *commands, np.int32(0)),
                            self.program_name(f"batch{batch}"), firmware.custom_call(self.structure))
        return CompiledBatch(program, pages, initial, _on_device(params), batch)

    def compile_exchange_loop(self, batch: int) -> "CompiledExchangeLoop":
        """Up to ``batch`` link-mode ticks per call, each exchanging its SENSORS and ACTUATORS with
        the firmware inside the compiled loop (:mod:`hil.bridges.compiled_exchange`).

        The compiled function takes (state, params, command in force, n, the exchange's address)
        and returns the state after the last tick flown, the command in force after it, how many
        ticks it flew and why it stopped. The ticks' rows go to the exchange, not through XLA: a
        buffer over 512 bytes would put the loop on XLA's thread pool. The tick is the loop's body,
        which computes what the single compiled tick computes, bit for bit.
        """
        pages, initial, param_pages = self._pages()

        def fly(state, params, command, n, context):
            unpacked = param_pages.unpack(params)

            def going(carry):
                flown, _, _, stop = carry
                return (flown < n) & (stop == compiled_exchange.REPLIED)

            def one(carry):
                flown, state, command, _ = carry
                new, out = self.tick.step(unpacked, pages.unpack(state), command)
                reply, stop = compiled_exchange.exchange(out, new.tick, context, MOTORS)
                replied = (stop == compiled_exchange.REPLIED) | (stop == compiled_exchange.PAUSED)
                command = jnp.where(replied, reply, command)
                return flown + 1, pages.pack(new), command, stop

            start = (np.int32(0), state, command, np.int32(compiled_exchange.REPLIED))
            flown, state, command, stop = jax.lax.while_loop(going, one, start)
            return state, command, flown, stop

        compiled_exchange.load()
        params = param_pages.pack(self.params)
        arguments = (initial, params, np.zeros(MOTORS), np.int32(0), np.uint64(0))
        program = _compiled(fly, arguments, self.program_name(f"exchange{batch}"), compiled_exchange.TARGET)
        return CompiledExchangeLoop(program, pages, initial, _on_device(params), batch)

    def _pages(self) -> tuple[StatePages, tuple, StatePages]:
        """How the state is paged, the initial state's pages on the host (a compiled call copies
        host pages on the way in, so they serve as every run's first state), and how the
        parameters are paged."""
        state = self.initial_state()
        pages = StatePages.of(state)
        return pages, pages.pack(state), StatePages.of(self.params)


def _on_device(pages: tuple) -> tuple:
    """The parameter pages, copied to the device once: every call of the run reads them there."""
    return tuple(jax.device_put(page) for page in pages)


PROGRAMS: "collections.OrderedDict[str, Any]" = collections.OrderedDict()


def _compiled(function, arguments, name: str, custom_call: str | None = None):
    """``function`` traced, exported (through the traced-tick cache) and compiled for ``arguments``;
    ``custom_call``: the one FFI target it may call. A program this process has compiled before
    is taken from :data:`PROGRAMS`."""
    if name in PROGRAMS:
        PROGRAMS.move_to_end(name)
        return PROGRAMS[name]
    exported = tick_cache.exported(function, arguments, name, custom_call)
    # The state's buffers are donated: XLA writes the new state over the old one instead of
    # allocating, which takes a third off the time of a call.
    program = PROGRAMS[name] = jax.jit(exported.call, donate_argnums=0).lower(*arguments).compile()
    while len(PROGRAMS) > PROGRAMS_KEPT:
        PROGRAMS.popitem(last=False)
    return program


@dataclass(frozen=True)
class _PagedProgram:
    call: Any
    pages: StatePages
    initial: tuple
    params: tuple  # the run's parameter pages, on the device

    def unravel(self, state):
        """The :class:`SimState` of a state the program returned, on the host."""
        return self.pages.unpack(tuple(np.asarray(page) for page in state))


@dataclass(frozen=True)
class CompiledTick(_PagedProgram):
    """The compiled tick over the state's pages, as a run loop calls it.

    ``advance(state[, command]) -> (state, row)``: ``state`` is the tuple of device pages that
    the previous call returned, which the call consumes, or ``initial`` (host pages, copied on the
    way in: no JAX operation to fetch at start-up), ``command`` the four
    throttles in force (link mode only), ``row`` a NumPy vector laid out as
    :attr:`Simulation.layout`, possibly read-only: copy it into the run's trace.
    """

    command_input: SharedInput | None  # link mode: where the command goes

    def advance(self, state, command=None):
        if self.command_input is None:
            state, row = self.call(state, self.params)
        else:
            state, row = self.call(state, self.params, self.command_input.write(command))
        return state, np.asarray(row)


@dataclass(frozen=True)
class CompiledExchangeLoop(_PagedProgram):
    """Many link-mode ticks per call with the exchange compiled in; see :meth:`Simulation.compile_exchange_loop`."""

    batch: int

    def fly(self, state, command, n: int, address):
        """Fly up to ``n`` ticks from ``state`` with ``command`` in force; ``address``: the
        :class:`hil.bridges.compiled_exchange.Exchange`'s, which receives their rows. Returns
        (state, command in force as a tuple, ticks flown, why it stopped)."""
        state, command, flown, stop = self.call(state, self.params, np.asarray(command, np.float64), np.int32(n),
                                                address)
        return state, tuple(np.asarray(command).tolist()), int(flown), int(stop)


@dataclass(frozen=True)
class CompiledBatch(_PagedProgram):
    """Many ticks per call over the state's pages; see :meth:`Simulation.compile_batch`."""

    batch: int

    def advance_many(self, state, *commands_and_n):
        """``(state, [commands,] n) -> (state, rows)``: n ticks from ``state``, which the call consumes."""
        return self.call(state, self.params, *commands_and_n)
