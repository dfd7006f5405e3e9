"""A scenario as (structure, parameters): what shapes the compiled tick, and every number it reads.

:class:`Structure` is static: the tick rate and substeps, which sensors exist and how often they
sample, which faults act on what, which firmware flies in-process. A change there changes the
program, which is compiled (and cached) per structure. :class:`TickParams` is a pytree passed to
the compiled tick as an argument: the vehicle, its initial state, the environment and wind, the
sensors' noise and ranges, the faults' timing and size, the in-process firmware's gains and the
PRNG key. A new seed or a heavier vehicle flies the same program; ``jax.vmap`` and ``jax.grad``
reach every number here.

Everything is built on the host with NumPy after the scenario has been validated; nothing here
starts JAX.
"""

from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np

from hil.models import gear as gear_layout
from hil.models import quaternion
from hil.models.environment import WindParams
from hil.models.pytree import pytree, static
from hil.models.quadrotor import LandingGear, QuadrotorParams
from hil.models.rigid_body import RigidBodyParams
from hil.models.standard import GRAVITY
from hil.scenario import Scenario
from hil.tick import fault_effects, firmware, sampling


@pytree
class Initial:
    position: jnp.ndarray  # (3,) m NED; with ``on_ground``, the down coordinate is replaced by the rest height
    velocity: jnp.ndarray  # (3,) m/s NED
    attitude: jnp.ndarray  # (4,) body -> world
    angular_rate: jnp.ndarray  # (3,) rad/s body
    rotor_speed: jnp.ndarray  # (4,) rad/s
    on_ground: bool = static(False)  # standing on its feet: the height follows from the mass and the gear


@pytree
class TickParams:
    key: jnp.ndarray  # (2,) uint32: the data of the scenario's PRNG key, ``jax.random.key(seed)``
    vehicle: QuadrotorParams
    initial: Initial
    home_altitude: jnp.ndarray  # m AMSL
    wind: WindParams
    sensors: dict  # sensor name -> its model's parameters
    faults: fault_effects.FaultParams
    firmware: Any  # the in-process firmware's parameters, or None


@dataclass(frozen=True)
class SensorSlot:
    """One sensor as the tick's structure sees it."""

    name: str
    decimation: int  # ticks between samples
    latency: int  # ticks from measurement to delivery, at most one decimation


@dataclass(frozen=True)
class Structure:
    """What shapes the compiled program. Hashable: it keys the programs a process keeps."""

    rate: int  # Hz
    substeps: int
    sensors: tuple[SensorSlot, ...]  # in the order of the wire's layout
    firmware: str | None  # the in-process firmware's name; None when the firmware flies outside the tick

    @property
    def dt(self) -> float:
        return 1.0 / self.rate


def key_data(seed: int) -> np.ndarray:
    """The data of ``jax.random.key(seed)`` (threefry: the seed's high and low 32 bits), without JAX."""
    return np.array([(seed >> 32) & 0xFFFFFFFF, seed & 0xFFFFFFFF], dtype=np.uint32)


def vehicle_params(scenario: Scenario) -> QuadrotorParams:
    v = scenario.vehicle
    gear = None
    if scenario.environment.ground:
        g = v.landing_gear
        gear = LandingGear(gear_layout.feet(g.foot_spread, g.foot_depth), np.float64(g.stiffness),
                           np.float64(g.damping), np.float64(g.friction), np.float64(gear_layout.SLIP_SPEED))
    return QuadrotorParams(
        body=RigidBodyParams.of(v.mass, np.diag(v.inertia)), arm_length=np.float64(v.arm_length),
        thrust_coefficient=np.float64(v.thrust_coefficient), torque_coefficient=np.float64(v.torque_coefficient),
        max_rotor_speed=np.float64(v.max_rotor_speed), motor_time_constant=np.float64(v.motor_time_constant),
        drag_linear=np.array(v.drag_linear), drag_quadratic=np.array(v.drag_quadratic),
        angular_drag=np.float64(v.angular_drag), gear=gear)


def wind_params(scenario: Scenario) -> WindParams:
    wind = scenario.environment.wind
    return WindParams(
        steady=np.array(wind.steady), turbulence_intensity=np.array(wind.turbulence.intensity),
        turbulence_time_constant=np.float64(wind.turbulence.time_constant),
        gust_start=np.array([g.start for g in wind.gusts], dtype=np.float64).reshape(-1),
        gust_duration=np.array([g.duration for g in wind.gusts], dtype=np.float64).reshape(-1),
        gust_peak=np.array([g.peak for g in wind.gusts], dtype=np.float64).reshape(-1, 3))


def initial(scenario: Scenario) -> Initial:
    init = scenario.initial
    position = init.position
    on_ground = position is None and scenario.environment.ground
    if position is None and not on_ground:  # no ground to stand on: where the feet would rest on it
        g = scenario.vehicle.landing_gear
        position = (0.0, 0.0, resting_height(scenario.vehicle.mass, g.foot_depth, g.stiffness))
    return Initial(np.array((0.0, 0.0, 0.0) if on_ground else position, dtype=np.float64),
                   np.array(init.velocity, dtype=np.float64), quaternion.from_euler(*np.radians(init.attitude_deg)),
                   np.array(init.angular_rate, dtype=np.float64), np.full(4, float(init.rotor_speed)), on_ground)


def resting_height(mass, foot_depth, stiffness, feet: int = 4):
    """Down coordinate of the centre of mass resting on ``feet`` feet: touching, plus the static sag."""
    return -foot_depth + mass * GRAVITY / (feet * stiffness)


def rest_height(vehicle: QuadrotorParams):
    """:func:`resting_height` of the vehicle's parameters (NumPy or JAX, as they are)."""
    gear = vehicle.gear
    return resting_height(vehicle.body.mass, gear.feet[0, 2], gear.stiffness, gear.feet.shape[0])


def build(scenario: Scenario, in_process_firmware: bool) -> tuple[Structure, TickParams]:
    """The scenario's structure and parameters; the firmware's only when it flies in-process."""
    slots, sensor_params = [], {}
    for kind, config in sampling.present(scenario):
        latency = round(kind.latency(config) * scenario.physics.rate_hz)
        slots.append(SensorSlot(kind.name, scenario.decimation(config.rate_hz), latency))
        sensor_params[kind.name] = kind.params(config, scenario)
    in_process = scenario.firmware.name if in_process_firmware else None
    structure = Structure(scenario.physics.rate_hz, scenario.physics.substeps, tuple(slots), in_process)
    params = TickParams(
        key=key_data(scenario.seed), vehicle=vehicle_params(scenario), initial=initial(scenario),
        home_altitude=np.float64(scenario.environment.home_altitude), wind=wind_params(scenario),
        sensors=sensor_params, faults=fault_effects.params(scenario),
        firmware=firmware.params(scenario) if in_process else None)
    return structure, params
