"""The scenario's faults, turned into what the compiled tick and the link layer apply.

A fault is active over whole ticks, ``[start, start + duration)`` in ticks. Motor and sensor
faults act inside the compiled tick (:class:`VehicleFaults`); link faults act on frames in the
link layer (:class:`LinkFaultPlan`, used by :class:`hil.bridges.impairment.ImpairedLink`).
Every random choice is drawn from ``fold_in(fold_in(key(seed), tick), stream)`` with a fixed
stream per fault, as the sensor noise is, so a fault's draws do not depend on the others'.
"""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from hil.scenario import Fault, LinkFault, Scenario

FAULT_STREAM_BASE = 64  # stream id of the scenario's fault i is FAULT_STREAM_BASE + i
LINK_DRAWS = 8  # per tick: lost, duplicated, corrupted, where, for hil -> firmware then firmware -> hil


@dataclass(frozen=True)
class Window:
    """Ticks ``[first, end)`` in which a fault is active."""

    first: int
    end: int

    @classmethod
    def of(cls, fault: Fault, scenario: Scenario) -> "Window":
        rate = scenario.physics.rate_hz
        end = scenario.ticks + 1 if fault.duration is None else round((fault.start + fault.duration) * rate)
        return cls(round(fault.start * rate), end)

    def contains(self, tick):
        return (tick >= self.first) & (tick < self.end)


def stream_name(index: int) -> str:
    return f"fault.{index}"


@dataclass(frozen=True)
class SensorEffect:
    window: Window
    mode: str
    offset: np.ndarray | None
    std: np.ndarray | None
    stream: str  # noise draws come from this stream


class VehicleFaults:
    """Motor and sensor faults as pure functions of the tick, for the compiled tick."""

    def __init__(self, scenario: Scenario):
        self.motors = [(Window.of(f, scenario), f.motor.index, f.motor.efficiency) for f in scenario.faults if f.motor]
        self.sensors: dict[str, list[SensorEffect]] = {}
        for index, fault in enumerate(scenario.faults):
            sensor = fault.sensor_fault()
            if sensor is not None:
                effect = SensorEffect(Window.of(fault, scenario), sensor.mode,
                                      None if sensor.offset is None else np.array(sensor.offset),
                                      None if sensor.std is None else np.array(sensor.std), stream_name(index))
                self.sensors.setdefault(sensor.name, []).append(effect)

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(e.stream for effects in self.sensors.values() for e in effects if e.mode == "noise")

    def motor_speed_scale(self, tick):
        """Per motor, the factor on the rotor speed it can reach: thrust goes with its square."""
        scale = jnp.ones(4)
        for window, index, efficiency in self.motors:
            scale = scale.at[index].multiply(jnp.where(window.contains(tick), np.sqrt(efficiency), 1.0))
        return scale

    def on_reading(self, name: str, tick, new, previous, delivered, noise):
        """The reading and freshness a sensor delivers at ``tick`` under its faults.

        Offsets and noise change the new value; a stuck sensor repeats the previous reading as
        if new; a dropout delivers nothing, so the firmware keeps what it had.
        """
        for effect in self.sensors.get(name, ()):
            active = effect.window.contains(tick)
            if effect.mode == "bias":
                new = jnp.where(active, new + effect.offset, new)
            elif effect.mode == "noise":
                new = jnp.where(active, new + effect.std * noise[effect.stream][:new.shape[0]], new)
        for effect in self.sensors.get(name, ()):
            active = effect.window.contains(tick)
            if effect.mode == "stuck":
                new = jnp.where(active, previous, new)
            elif effect.mode == "dropout":
                new = jnp.where(active, previous, new)
                delivered = delivered & ~active
        return new, delivered


@dataclass(frozen=True)
class LinkDecision:
    """What the link does to one tick's frame in one direction."""

    lost: bool
    duplicated: bool
    corrupted: bool
    where: float  # in [0, 1): the position of the flipped bit in the frame
    delay: int  # ticks the frame is held back (replies only)


class LinkFaultPlan:
    """Per tick, what happens to the SENSORS frame going out and the ACTUATORS frame coming back.

    The draws are made a block of ticks at a time, on the host, from the scenario key, so the
    same scenario and seed lose, duplicate and corrupt the same frames on every run.
    """

    BLOCK = 4096

    def __init__(self, scenario: Scenario):
        self.rate = scenario.physics.rate_hz
        self.faults = [(Window.of(f, scenario), f.link, FAULT_STREAM_BASE + i)
                       for i, f in enumerate(scenario.faults) if f.link is not None]
        self.key = jax.random.key(scenario.seed)
        self._blocks: dict[tuple[int, int], np.ndarray] = {}
        self._draw = jax.jit(jax.vmap(_link_draws, in_axes=(None, 0, None)))

    def __bool__(self) -> bool:
        return bool(self.faults)

    def _active(self, tick: int) -> list[tuple[LinkFault, int]]:
        return [(link, stream) for window, link, stream in self.faults if window.first <= tick < window.end]

    def _uniforms(self, tick: int, stream: int) -> np.ndarray:
        first = tick - tick % self.BLOCK
        block = self._blocks.get((first, stream))
        if block is None:
            if len(self._blocks) > 8:
                self._blocks.clear()
            ticks = np.arange(first, first + self.BLOCK, dtype=np.uint32)
            block = self._blocks[(first, stream)] = np.asarray(self._draw(self.key, ticks, np.uint32(stream)))
        return block[tick - first]

    def decision(self, tick: int, outbound: bool) -> LinkDecision | None:
        """None when no link fault is active at ``tick``."""
        active = self._active(tick)
        if not active:
            return None
        lost = duplicated = corrupted = False
        where, delay = 0.0, 0
        first = 0 if outbound else LINK_DRAWS // 2
        for link, stream in active:
            u_lost, u_duplicated, u_corrupted, u_where = self._uniforms(tick, stream)[first:first + LINK_DRAWS // 2]
            lost |= bool(u_lost < link.loss)
            duplicated |= bool(u_duplicated < link.duplicate)
            if u_corrupted < link.corrupt:
                corrupted, where = True, float(u_where)
            delay = max(delay, round(link.delay * self.rate))
        return LinkDecision(lost, duplicated, corrupted, where, 0 if outbound else delay)


def _link_draws(key, tick, stream):
    return jax.random.uniform(jax.random.fold_in(jax.random.fold_in(key, tick), stream), (LINK_DRAWS,))


def flip_bit(frame: bytes, where: float) -> bytes:
    """``frame`` with one bit flipped at fraction ``where`` of its length, delimiter excluded."""
    body = bytearray(frame[:-1])
    bit = min(int(where * len(body) * 8), len(body) * 8 - 1)
    body[bit // 8] ^= 1 << (bit % 8)
    return bytes(body) + frame[-1:]
