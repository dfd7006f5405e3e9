"""The compiled tick: wind, physics substeps, the sensors due at the tick, and (in-process) the firmware.

:meth:`Simulation.advance` is one tick. It integrates tick k -> k + 1 with the command in force,
then samples the sensors due at k + 1; in-process, the firmware's own last command is used and
the firmware answers the new readings inside the same call. The initial state has tick -1,
which ``advance`` turns into tick 0 without moving the vehicle, so one compiled body serves the
whole run. It is compiled as one call per tick (:meth:`Simulation.compile`: real time, and
lockstep without the compiled exchange), as a loop of many ticks per call
(:meth:`Simulation.compile_batch`: in-process runs and replay), or as a loop with the lockstep
exchange inside (:meth:`Simulation.compile_exchange_loop`).

``advance`` returns the new state (kept on the device) and one flat float64 vector for the host
whose layout is :attr:`Simulation.layout`. Randomness for tick k and consumer s is
``fold_in(fold_in(key(seed), k), s)`` with the fixed stream ids of :data:`STREAMS`; each stream
yields a block of standard-normal draws for its consumer (:func:`tick_noise`).
"""

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import export

import hil.jaxconfig  # noqa: F401
from hil import tick_cache
from hil.bridges import compiled_exchange
from hil.faults import FAULT_STREAM_BASE, VehicleFaults
from hil.firmware_stubs import open_loop, quad_pid
from hil.models import environment, quadrotor, quaternion, sensors
from hil.models import gear as gear_layout
from hil.models.pytree import pytree, replace
from hil.models.quadrotor import LandingGear, QuadrotorParams, QuadrotorState
from hil.models.rigid_body import RigidBodyParams, RigidBodyState
from hil.models.small import matvec_t
from hil.pages import SharedInput, StatePages
from hil.scenario import Scenario

# Fixed per-consumer stream ids: adding a consumer never shifts another's noise. The scenario's
# fault i draws from stream FAULT_STREAM_BASE + i (``fault.i``).
STREAMS = {"wind": 1, "imu": 16, "baro": 17, "mag": 18, "gps": 19}


def stream_id(name: str) -> int:
    if name.startswith("fault."):
        return FAULT_STREAM_BASE + int(name.removeprefix("fault."))
    return STREAMS[name]
SENSOR_ORDER = ("imu", "baro", "mag", "gps")
READING_SIZE = {"imu": 6, "baro": 2, "mag": 3, "gps": 6}
FIRMWARES: dict[str, ModuleType] = {"quad_pid": quad_pid, "open_loop": open_loop}
MOTORS = 4
UNROLLED_SUBSTEPS = 4


def tick_noise(key, tick, streams: tuple[str, ...]) -> dict:
    """Standard-normal draws for each consumer at ``tick``, from its own stream.

    All streams are derived in one vectorised call: XLA on CPU runs threefry as a loop, and one
    loop per consumer per tick would cost more than the physics.
    """
    ids = jnp.array([stream_id(name) for name in streams], dtype=jnp.uint32)
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.fold_in(key, tick), ids)
    draws = jax.vmap(lambda k: jax.random.normal(k, (sensors.NORMALS_PER_STREAM,)))(keys)
    return {name: draws[i] for i, name in enumerate(streams)}


@pytree
class Channel:
    """One sensor's persistent state: its model's state, the last delivered reading, one in flight."""

    model: Any
    reading: jnp.ndarray
    pending: jnp.ndarray  # a reading in flight; empty for a sensor without latency (a smaller state)


@pytree
class SimState:
    tick: jnp.ndarray  # int64 scalar: sim time is tick / rate, never accumulated
    vehicle: QuadrotorState
    wind: environment.WindState
    channels: dict
    firmware: Any  # the in-process firmware's state, or None
    command: jnp.ndarray  # (4,) throttle in force
    # (3,) m/s^2 NED, mean over the last tick (what an IMU's delta-velocity gives); at tick 0, the initial state's
    acceleration: jnp.ndarray


@dataclass(frozen=True)
class SensorSetup:
    name: str
    sample: Callable
    params: Any
    init: Any
    decimation: int  # ticks between samples
    latency: int  # ticks from measurement to delivery, at most one decimation


def _sensor_setups(scenario: Scenario) -> list[SensorSetup]:
    present = scenario.sensors.present()
    setups = []
    for name in SENSOR_ORDER:
        if name not in present:
            continue
        config = present[name]
        decimation = scenario.decimation(config.rate_hz)
        if name == "imu":
            params = sensors.ImuParams(
                period=1.0 / config.rate_hz, gyro_noise_density=config.gyro_noise_density,
                gyro_bias_random_walk=config.gyro_bias_random_walk, gyro_range=config.gyro_range,
                accel_noise_density=config.accel_noise_density, accel_bias_random_walk=config.accel_bias_random_walk,
                accel_range=config.accel_range)
            setups.append(SensorSetup(name, sensors.imu_sample, params, sensors.imu_init(params), decimation, 0))
        elif name == "baro":
            setups.append(SensorSetup(name, sensors.baro_sample, sensors.BaroParams(config.noise), (), decimation, 0))
        elif name == "mag":
            params = sensors.MagParams(np.array(scenario.environment.magnetic_field), config.noise)
            setups.append(SensorSetup(name, sensors.mag_sample, params, (), decimation, 0))
        elif name == "gps":
            params = sensors.GpsParams(np.array(config.position_noise), np.array(config.velocity_noise))
            latency = round(config.latency * scenario.physics.rate_hz)
            setups.append(SensorSetup(name, sensors.gps_sample, params, (), decimation, latency))
    return setups


def vehicle_params(scenario: Scenario) -> QuadrotorParams:
    v = scenario.vehicle
    gear = None
    if scenario.environment.ground:
        g = v.landing_gear
        gear = LandingGear(gear_layout.feet(g.foot_spread, g.foot_depth), g.stiffness, g.damping, g.friction,
                           gear_layout.SLIP_SPEED)
    return QuadrotorParams(
        body=RigidBodyParams.of(v.mass, np.diag(v.inertia)), arm_length=v.arm_length,
        thrust_coefficient=v.thrust_coefficient, torque_coefficient=v.torque_coefficient,
        max_rotor_speed=v.max_rotor_speed, motor_time_constant=v.motor_time_constant,
        drag_linear=np.array(v.drag_linear), drag_quadratic=np.array(v.drag_quadratic),
        angular_drag=v.angular_drag, gear=gear)


def rest_height(scenario: Scenario) -> float:
    """Down coordinate of the centre of mass resting on its feet: touching, plus the static sag."""
    v = scenario.vehicle
    return -v.landing_gear.foot_depth + v.mass * environment.GRAVITY / (4 * v.landing_gear.stiffness)


class Simulation:
    """Host-side builder of the tick for one scenario; its methods are the pure functions that get compiled."""

    def __init__(self, scenario: Scenario, in_process_firmware: bool = True):
        self.scenario = scenario
        self.rate = scenario.physics.rate_hz
        self.dt = 1.0 / self.rate
        self.substeps = scenario.physics.substeps
        self.params = vehicle_params(scenario)
        wind = scenario.environment.wind
        self.wind_params = environment.WindParams(
            steady=np.array(wind.steady), turbulence_intensity=np.array(wind.turbulence.intensity),
            turbulence_time_constant=wind.turbulence.time_constant,
            gust_start=np.array([g.start for g in wind.gusts]).reshape(-1),
            gust_duration=np.array([g.duration for g in wind.gusts]).reshape(-1),
            gust_peak=np.array([g.peak for g in wind.gusts]).reshape(-1, 3))
        self.home_altitude = scenario.environment.home_altitude
        self.sensors = _sensor_setups(scenario)
        self.faults = VehicleFaults(scenario)
        self.in_process = in_process_firmware
        self.firmware = FIRMWARES[scenario.firmware.name] if in_process_firmware else None
        self.firmware_params = self.firmware.params_from_scenario(scenario) if self.firmware else None
        self.layout = self._layout()
        self.width = sum(size for _, size in self.layout.values()) if self.layout else 0

    # ---- state -------------------------------------------------------------------------------

    def initial_state(self) -> SimState:
        init = self.scenario.initial
        position = np.array(init.position if init.position is not None else (0.0, 0.0, rest_height(self.scenario)))
        attitude = quaternion.from_euler(*np.radians(init.attitude_deg))
        body = RigidBodyState(position, np.array(init.velocity), attitude, np.array(init.angular_rate))
        vehicle = QuadrotorState(body, np.full(MOTORS, init.rotor_speed))
        channels = {s.name: Channel(s.init, np.zeros(READING_SIZE[s.name]),
                                    np.zeros(READING_SIZE[s.name] if s.latency else 0)) for s in self.sensors}
        firmware = self.firmware.init(self.firmware_params) if self.firmware else None
        return SimState(np.array(-1, dtype=np.int64), vehicle, environment.wind_init(self.wind_params),
                        channels, firmware, np.zeros(MOTORS), np.zeros(3))

    # ---- stages ------------------------------------------------------------------------------

    def air(self, vehicle: QuadrotorState, wind: environment.WindState, tick):
        atmosphere = environment.isa(self.home_altitude - vehicle.body.position[2])
        velocity = environment.wind_velocity(self.wind_params, wind, tick / self.rate)
        return atmosphere, quadrotor.Air(atmosphere.density, velocity)

    @property
    def streams(self) -> tuple[str, ...]:
        return ("wind",) + tuple(s.name for s in self.sensors) + self.faults.streams

    def physics(self, state: SimState, command, noise) -> SimState:
        """Integrate one tick with ``command`` and the air at the tick's start held constant.

        From tick -1 (the initial state) the step has zero length: tick 0 is the initial state.
        """
        _, air = self.air(state.vehicle, state.wind, state.tick)
        dt = jnp.where(state.tick >= 0, self.dt, 0.0)
        substep = dt / self.substeps
        # A motor fault limits the rotor speed the motor reaches, whatever the firmware asks for.
        reachable = command * self.faults.motor_speed_scale(state.tick) if self.faults.motors else command

        def one(vehicle):
            return quadrotor.step(self.params, vehicle, reachable, air, substep)

        vehicle = state.vehicle
        if self.substeps <= UNROLLED_SUBSTEPS:  # a loop of one XLA op per iteration costs more than it saves
            for _ in range(self.substeps):
                vehicle = one(vehicle)
        else:
            vehicle = jax.lax.fori_loop(0, self.substeps, lambda _, v: one(v), vehicle)
        wind = environment.wind_step(self.wind_params, state.wind, dt, noise["wind"])
        # Tick 0 has no tick behind it to average over: its IMU reads the initial state's own acceleration.
        acceleration = jax.lax.cond(
            state.tick >= 0, lambda: (vehicle.body.velocity - state.vehicle.body.velocity) / self.dt,
            lambda: quadrotor.derivative(self.params, state.vehicle, reachable, air).body.velocity)
        return SimState(state.tick + 1, vehicle, wind, state.channels, state.firmware, command, acceleration)

    def sample(self, state: SimState, noise):
        """Sample the sensors due at ``state.tick``; returns the state and a freshness flag per sensor."""
        atmosphere, air = self.air(state.vehicle, state.wind, state.tick)
        body = state.vehicle.body
        rotation = quaternion.to_matrix(body.attitude)
        specific_force = matvec_t(rotation, state.acceleration - jnp.array([0.0, 0.0, environment.GRAVITY]))
        truth = sensors.Truth(body.position, body.velocity, body.attitude, body.angular_rate, specific_force, atmosphere)
        channels, fresh = {}, {}
        for setup in self.sensors:
            channel = state.channels[setup.name]
            measure = state.tick % setup.decimation == 0
            model, measurement = setup.sample(setup.params, channel.model, truth, noise[setup.name])
            model = jax.tree_util.tree_map(lambda new, old: jnp.where(measure, new, old), model, channel.model)
            if setup.latency == 0:
                deliver, delivered, pending = measure, measurement, channel.pending
            else:
                deliver = (state.tick >= setup.latency) & ((state.tick - setup.latency) % setup.decimation == 0)
                delivered, pending = channel.pending, jnp.where(measure, measurement, channel.pending)
            if setup.name in self.faults.sensors:
                delivered, deliver = self.faults.on_reading(setup.name, state.tick, delivered, channel.reading,
                                                            deliver, noise)
            channels[setup.name] = Channel(model, jnp.where(deliver, delivered, channel.reading), pending)
            fresh[setup.name] = deliver
        return replace(state, channels=channels), fresh

    def fly_firmware(self, state: SimState, fresh) -> SimState:
        readings = {name: channel.reading for name, channel in state.channels.items()}
        firmware, command = self.firmware.step(self.firmware_params, state.firmware, readings, fresh, state.tick / self.rate)
        return replace(state, firmware=firmware, command=command)

    # ---- what the host sees ------------------------------------------------------------------

    def _layout(self) -> dict[str, tuple[int, int]]:
        sizes = [("position", 3), ("velocity", 3), ("attitude", 4), ("angular_rate", 3), ("rotor_speed", 4),
                 ("wind", 3), ("command", MOTORS)]
        sizes += [(f"reading.{s.name}", READING_SIZE[s.name]) for s in self.sensors]
        sizes += [("fresh", len(self.sensors))]
        layout, offset = {}, 0
        for name, size in sizes:
            layout[name] = (offset, size)
            offset += size
        return layout

    def observe(self, state: SimState, fresh):
        body = state.vehicle.body
        _, air = self.air(state.vehicle, state.wind, state.tick)
        parts = [body.position, body.velocity, body.attitude, body.angular_rate, state.vehicle.rotor_speed,
                 air.wind, state.command]
        parts += [state.channels[s.name].reading for s in self.sensors]
        parts += [jnp.stack([fresh[s.name] for s in self.sensors]).astype(jnp.float64)] if self.sensors else [jnp.zeros(0)]
        return jnp.concatenate(parts)

    # ---- the two entry points ----------------------------------------------------------------

    def advance(self, state: SimState, command=None):
        noise = tick_noise(jax.random.key(self.scenario.seed), state.tick + 1, self.streams)
        state = self.physics(state, state.command if command is None else command, noise)
        state, fresh = self.sample(state, noise)
        if self.firmware:
            state = self.fly_firmware(state, fresh)
        return state, self.observe(state, fresh)

    def compile(self) -> "CompiledTick":
        """Lower and compile the tick for this scenario's shapes, before tick 0."""
        pages, initial = self._pages()

        def advance(state, *command):
            new, out = self.advance(pages.unpack(state), *command)
            return pages.pack(new), out

        command = () if self.in_process else (np.zeros(MOTORS),)
        compiled = _compiled(advance, (initial, *command), tick_cache.key(self.scenario, self.in_process))
        return CompiledTick(compiled, pages, initial, None if self.in_process else SharedInput(MOTORS))

    def compile_batch(self, batch: int) -> "CompiledBatch":
        """Up to ``batch`` ticks per call: in link mode each with its own command (replay), or
        in-process, the firmware answering inside the tick (an in-process run).

        The compiled function takes (state, commands (batch, MOTORS), n) in link mode and (state, n)
        in-process, and returns the state after n ticks and their rows (the rest zero). The number
        of ticks is an argument, so the loop cannot be unrolled or specialised, and XLA compiles one
        tick as the loop's body, which computes what the single compiled tick computes, bit for bit
        (replay checks every row).
        """
        pages, initial = self._pages()

        def advance_many(state, *commands_and_n):
            *commands, n = commands_and_n

            def one(index, carry):
                state, rows = carry
                new, out = self.advance(pages.unpack(state), *(c[index] for c in commands))
                return pages.pack(new), jax.lax.dynamic_update_slice(rows, out[None, :], (index, jnp.zeros_like(index)))

            return jax.lax.fori_loop(0, n, one, (state, jnp.zeros((batch, self.width))))

        commands = () if self.in_process else (np.zeros((batch, MOTORS)),)
        name = tick_cache.key(self.scenario, self.in_process) + f"-batch{batch}"
        return CompiledBatch(_compiled(advance_many, (initial, *commands, np.int32(0)), name), pages, initial, batch)

    def compile_exchange_loop(self, batch: int) -> "CompiledExchangeLoop":
        """Up to ``batch`` link-mode ticks per call, each exchanging its SENSORS and ACTUATORS with
        the firmware inside the compiled loop (:mod:`hil.bridges.compiled_exchange`).

        The compiled function takes (state, command in force, n, the exchange's address) and
        returns the state after the last tick flown, the command in force after it, how many ticks
        it flew and why it stopped. The ticks' rows go to the exchange, not through XLA: a buffer
        over 512 bytes would put the loop on XLA's thread pool. The tick is the loop's body, which
        computes what the single compiled tick computes, bit for bit.
        """
        pages, initial = self._pages()

        def fly(state, command, n, context):
            def going(carry):
                flown, _, _, stop = carry
                return (flown < n) & (stop == compiled_exchange.REPLIED)

            def one(carry):
                flown, state, command, _ = carry
                new, out = self.advance(pages.unpack(state), command)
                reply, stop = compiled_exchange.exchange(out, new.tick, context, MOTORS)
                replied = (stop == compiled_exchange.REPLIED) | (stop == compiled_exchange.PAUSED)
                command = jnp.where(replied, reply, command)
                return flown + 1, pages.pack(new), command, stop

            start = (np.int32(0), state, command, np.int32(compiled_exchange.REPLIED))
            flown, state, command, stop = jax.lax.while_loop(going, one, start)
            return state, command, flown, stop

        compiled_exchange.load()
        arguments = (initial, np.zeros(MOTORS), np.int32(0), np.uint64(0))
        name = tick_cache.key(self.scenario, False) + f"-exchange{batch}"
        return CompiledExchangeLoop(_compiled(fly, arguments, name, compiled_exchange.TARGET), pages, initial, batch)

    def _pages(self) -> tuple[StatePages, tuple]:
        """How the state is paged, and the initial state's pages on the host (a compiled call
        copies host pages on the way in, so they serve as every run's first state)."""
        state = self.initial_state()
        pages = StatePages.of(state)
        return pages, pages.pack(state)


def _compiled(function, arguments, name: str, custom_call: str | None = None):
    """``function`` traced, exported (through the traced-tick cache) and compiled for ``arguments``;
    ``custom_call``: the one FFI target it may call."""
    exported = tick_cache.load(name)
    if exported is None:
        checks = [export.DisabledSafetyCheck.custom_call(custom_call)] if custom_call else []
        exported = export.export(jax.jit(function), disabled_checks=checks)(*arguments)
        tick_cache.store(name, exported)
    # The state's buffers are donated: XLA writes the new state over the old one instead of
    # allocating, which takes a third off the time of a call.
    return jax.jit(exported.call, donate_argnums=0).lower(*arguments).compile()


@dataclass(frozen=True)
class _PagedProgram:
    call: Any
    pages: StatePages
    initial: tuple

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
            state, row = self.call(state)
        else:
            state, row = self.call(state, self.command_input.write(command))
        return state, np.asarray(row)


@dataclass(frozen=True)
class CompiledExchangeLoop(_PagedProgram):
    """Many link-mode ticks per call with the exchange compiled in; see :meth:`Simulation.compile_exchange_loop`."""

    batch: int

    def fly(self, state, command, n: int, address):
        """Fly up to ``n`` ticks from ``state`` with ``command`` in force; ``address``: the
        :class:`hil.bridges.compiled_exchange.Exchange`'s, which receives their rows. Returns
        (state, command in force as a tuple, ticks flown, why it stopped)."""
        state, command, flown, stop = self.call(state, np.asarray(command, np.float64), np.int32(n), address)
        return state, tuple(np.asarray(command).tolist()), int(flown), int(stop)


@dataclass(frozen=True)
class CompiledBatch(_PagedProgram):
    """Many ticks per call over the state's pages; see :meth:`Simulation.compile_batch`."""

    batch: int

    def advance_many(self, state, *commands_and_n):
        """``(state, [commands,] n) -> (state, rows)``: n ticks from ``state``, which the call consumes."""
        return self.call(state, *commands_and_n)
