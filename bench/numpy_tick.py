"""The link-mode tick (one RK4 physics step, wind, IMU/baro/mag/GPS samples) written in NumPy.

The baseline the compiled JAX tick is measured against: the same equations and the same work
per tick, on the same scenario, with NumPy's own generator for the noise.
"""

import numpy as np

from hil.models.environment import GAS_CONSTANT_AIR, GRAVITY, LAPSE_RATE, SEA_LEVEL_DENSITY, SEA_LEVEL_PRESSURE, \
    SEA_LEVEL_TEMPERATURE
from hil.sim import Simulation

SPIN = np.array([1.0, 1.0, -1.0, -1.0])


def rotation(q):
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


class NumpyTick:
    def __init__(self, simulation: Simulation, seed=0):
        p = simulation.params.vehicle
        self.mass, self.inertia, self.inverse_inertia = p.body.mass, p.body.inertia, p.body.inverse_inertia
        self.positions = np.asarray(p.motor_positions())
        self.kf, self.km, self.max_speed, self.tau = p.thrust_coefficient, p.torque_coefficient, p.max_rotor_speed, \
            p.motor_time_constant
        self.drag_linear, self.drag_quadratic, self.angular_drag = p.drag_linear, p.drag_quadratic, p.angular_drag
        self.gear = p.gear
        self.dt = simulation.dt
        self.home = simulation.params.home_altitude
        self.wind_params = simulation.params.wind
        self.rng = np.random.default_rng(seed)
        state = simulation.initial_state()
        body = state.vehicle.body
        self.y = np.concatenate([body.position, body.velocity, body.attitude, body.angular_rate,
                                 state.vehicle.rotor_speed]).astype(float)
        self.turbulence = np.zeros(3)
        self.gyro_bias, self.accel_bias = np.zeros(3), np.zeros(3)

    def derivative(self, y, command, density, wind):
        p, v, q, w, rotor = y[0:3], y[3:6], y[6:10], y[10:13], y[13:17]
        R = rotation(q)
        scale = density / SEA_LEVEL_DENSITY
        thrust = self.kf * scale * rotor**2
        torque = np.array([-(self.positions[:, 1] * thrust).sum(), (self.positions[:, 0] * thrust).sum(),
                           (SPIN * self.km * scale * rotor**2).sum()])
        air = R.T @ (v - wind)
        force_body = np.array([0, 0, -thrust.sum()]) - scale * (self.drag_linear * air
                                                              + self.drag_quadratic * np.abs(air) * air)
        torque = torque - self.angular_drag * w
        force = R @ force_body + np.array([0, 0, self.mass * GRAVITY])
        if self.gear is not None:
            arms = self.gear.feet @ R.T
            foot_velocity = v + np.cross(R @ w, arms)
            depth = p[2] + arms[:, 2]
            normal = np.where(depth > 0, np.maximum(self.gear.stiffness * depth + self.gear.damping * foot_velocity[:, 2], 0), 0)
            slip = foot_velocity[:, :2]
            speed = np.sqrt((slip**2).sum(axis=1) + self.gear.slip_speed**2)
            forces = np.concatenate([-self.gear.friction * normal[:, None] * slip / speed[:, None], -normal[:, None]], axis=1)
            force = force + forces.sum(axis=0)
            torque = torque + R.T @ np.cross(arms, forces).sum(axis=0)
        qw, qx, qy, qz = q
        qdot = 0.5 * np.array([-qx * w[0] - qy * w[1] - qz * w[2], qw * w[0] + qy * w[2] - qz * w[1],
                               qw * w[1] - qx * w[2] + qz * w[0], qw * w[2] + qx * w[1] - qy * w[0]])
        wdot = self.inverse_inertia @ (torque - np.cross(w, self.inertia @ w))
        return np.concatenate([v, force / self.mass, qdot, wdot, (np.clip(command, 0, 1) * self.max_speed - rotor) / self.tau])

    def isa(self, altitude):
        temperature = SEA_LEVEL_TEMPERATURE - LAPSE_RATE * altitude
        pressure = SEA_LEVEL_PRESSURE * (temperature / SEA_LEVEL_TEMPERATURE) ** (GRAVITY / (GAS_CONSTANT_AIR * LAPSE_RATE))
        return temperature, pressure, pressure / (GAS_CONSTANT_AIR * temperature)

    def advance(self, command, tick):
        wp = self.wind_params
        _, _, density = self.isa(self.home - self.y[2])
        wind = wp.steady + self.turbulence
        y, dt = self.y, self.dt
        k1 = self.derivative(y, command, density, wind)
        k2 = self.derivative(y + dt / 2 * k1, command, density, wind)
        k3 = self.derivative(y + dt / 2 * k2, command, density, wind)
        k4 = self.derivative(y + dt * k3, command, density, wind)
        y = y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        y[6:10] /= np.linalg.norm(y[6:10])
        self.y = y
        decay = np.exp(-dt / wp.turbulence_time_constant)
        noise = self.rng.standard_normal((5, 12))
        self.turbulence = decay * self.turbulence + wp.turbulence_intensity * np.sqrt(1 - decay**2) * noise[0, :3]
        # Sensors at the new state: specific force, IMU, baro, mag, GPS.
        temperature, pressure, density = self.isa(self.home - y[2])
        R = rotation(y[6:10])
        acceleration = self.derivative(y, command, density, wind)[3:6]
        specific = R.T @ (acceleration - np.array([0, 0, GRAVITY]))
        self.gyro_bias += 4e-5 * np.sqrt(dt) * noise[1, :3]
        self.accel_bias += 6e-4 * np.sqrt(dt) * noise[1, 3:6]
        imu = np.concatenate([y[10:13] + self.gyro_bias + noise[1, 6:9] * 1e-3,
                              specific + self.accel_bias + noise[1, 9:12] * 1e-2])
        baro = np.array([pressure + 3.0 * noise[2, 0], temperature])
        mag = R.T @ np.array([2.1e-5, 0, 4.3e-5]) + 3e-7 * noise[3, :3]
        gps = np.concatenate([y[0:3] + 0.3 * noise[4, :3], y[3:6] + 0.1 * noise[4, 3:6]])
        return np.concatenate([y, imu, baro, mag, gps])
