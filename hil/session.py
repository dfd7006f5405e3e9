"""Fly the compiled tick against a flight controller on a link: HELLO, then lockstep or real time.

Lockstep: tick k + 1 is not released until the ACTUATORS for tick k arrive or the scenario's
timeout passes (a counted fault handled by its policy). Real time: ticks are released on
absolute deadlines (sleep, then spin for the last stretch); a command applies from the first
tick after it arrived, and a firmware silent for longer than the timeout meets the policy. Both count everything that went wrong and never hide it.
"""

import collections
import contextlib
import gc
import time
from dataclasses import dataclass, field

import numpy as np

from hil import wire
from hil.bridges import compiled_exchange
from hil.bridges.compiled_exchange import Exchange
from hil.bridges.link import Link, LinkError, Undelivered
from hil.record import TickRecord
from hil.scenario import SENSOR_FIELDS, LinkSettings
from hil.sim import MOTORS, CompiledExchangeLoop, CompiledTick, Simulation
from hil.timings import Timings

HELLO_INTERVAL = 0.2  # s between HELLOs while waiting for the firmware's
# s: listen to the link until this long before a deadline, then spin. Waking from select is
# late by up to a few hundred µs on a loaded machine; a reply arriving in this window applies
# from the next tick.
SPIN_BEFORE_DEADLINE = 0.0004
NO_THRUST = (0.0,) * MOTORS
STATUS_KEPT = 20  # STATUS messages kept in memory at each end of a run
WARNINGS_KEPT = 100  # warnings and worse kept in memory after the first STATUS_KEPT messages
WARNING = wire.SEVERITIES.index("warning")  # a STATUS this severe or worse is shown without -v


class SessionError(RuntimeError):
    """The session cannot go on; the message names the peer and what to check, and
    ``goodbye_code`` is the code of the GOODBYE that tells the firmware why (docs/protocol.md §4)."""

    goodbye_code = wire.GOODBYE_ERROR

    def __init__(self, message: str, goodbye_code: int | None = None):
        super().__init__(message)
        if goodbye_code is not None:
            self.goodbye_code = goodbye_code


class SessionTimeout(SessionError):
    """The firmware did not answer in time: no HELLO, or no reply under the ``abort`` policy."""

    goodbye_code = wire.GOODBYE_TIMEOUT


class FirmwareDied(SessionError):
    pass


@dataclass
class LinkStats:
    mode: str
    link: str
    sensors_sent: int = 0
    actuators_received: int = 0
    round_trips: Timings = field(default_factory=Timings)  # s, SENSORS sent to its ACTUATORS received
    late_replies: int = 0  # timeouts (real time: silences longer than the timeout), and replies older than
    # the command in force
    lost_replies: int = 0  # ticks whose reply never came
    unexpected: int = 0  # ACTUATORS for a tick that was not asked for
    policy_applied: dict = field(default_factory=dict)
    # STATUS messages as (tick, severity, text): the first STATUS_KEPT, the first WARNINGS_KEPT
    # warnings and worse after those, and the latest STATUS_KEPT of the rest; a flood of them is
    # counted, not kept (the flight log has every one).
    status_messages: list = field(default_factory=list)
    status_warnings: list = field(default_factory=list)
    status_latest: collections.deque = field(default_factory=lambda: collections.deque(maxlen=STATUS_KEPT))
    status_counts: dict = field(default_factory=dict)  # severity -> STATUS messages received
    overruns: int = 0  # real time: ticks released more than one period late
    period_errors: Timings = field(default_factory=Timings)  # real time: release time minus deadline, s
    wall_seconds: float = 0.0
    exchanged_in_loop: int | None = None  # lockstep: replies taken inside the compiled tick loop; None: not used
    capacity: float | None = None  # bytes/s of the line, serial only
    counters: object = None  # the link's LinkCounters, live

    def note_status(self, message: wire.Status) -> None:
        self.status_counts[message.severity] = self.status_counts.get(message.severity, 0) + 1
        kept = (message.tick, message.severity, message.text)
        if len(self.status_messages) < STATUS_KEPT:
            self.status_messages.append(kept)
        elif message.severity >= WARNING and len(self.status_warnings) < WARNINGS_KEPT:
            self.status_warnings.append(kept)
        else:
            self.status_latest.append(kept)

    @property
    def not_reproducible(self) -> str | None:
        """Why this run's flight does not follow from its scenario and seed alone, or None if it does."""
        if not self.policy_applied:
            return None
        applied = ", ".join(f"{policy} {count}x" for policy, count in sorted(self.policy_applied.items()))
        return (f"the timeout policy was applied ({applied}): which ticks it met depended on when replies came, "
                f"not on the seed")

    def summary(self) -> list[tuple[str, str]]:
        """Rows for the run summary: (what, value)."""
        rows = [("link", f"{self.link}, {self.mode}")]
        if self.not_reproducible:
            rows.append(("reproducible", f"no: {self.not_reproducible}"))
        if self.exchanged_in_loop is not None:
            rows.append(("exchange", f"{self.exchanged_in_loop} of {self.sensors_sent} ticks in the compiled tick loop, "
                                     f"the rest one by one"))
        c = self.counters
        rows.append(("frames", f"{c.frames_sent} sent ({c.bytes_sent} B), {c.frames_received} received "
                               f"({c.bytes_received} B)"))
        if self.round_trips:
            rtt = self.round_trips
            rows.append(("round trip", f"p50 {rtt.percentile(50) * 1e6:.0f} µs, p99 {rtt.percentile(99) * 1e6:.0f} µs, "
                                       f"max {rtt.max() * 1e6:.0f} µs"))
        rows.append(("replies", f"{self.late_replies} late, {self.lost_replies} lost, {self.unexpected} unexpected"
                     + (f"; policy {self.policy_applied}" if self.policy_applied else "")))
        if c.injected:
            rows.append(("injected faults", ", ".join(f"{v} {k}" for k, v in sorted(c.injected.items()))))
        errors = c.errors()
        rows.append(("bad frames", ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "none"))
        rows.append(("resyncs", f"{c.stream.resyncs} ({c.stream.garbage_bytes} B dropped), {c.duplicates} duplicates, "
                                f"{c.foreign} from other senders"))
        if self.period_errors:
            error = self.period_errors
            rows.append(("period error", f"p50 {error.percentile(50) * 1e6:.1f} µs, p99 {error.percentile(99) * 1e6:.1f} µs, "
                                         f"max {error.max() * 1e6:.1f} µs; {self.overruns} overruns"))
        if self.status_counts:
            rows.append(("firmware messages", ", ".join(f"{count} {wire.SEVERITIES[severity]}" for severity, count
                                                         in sorted(self.status_counts.items()))))
        if self.capacity and self.wall_seconds > 0:
            used = max(c.bytes_sent, c.bytes_received) / self.wall_seconds
            rows.append(("line use", f"{used:.0f} B/s of {self.capacity:.0f} B/s ({100 * used / self.capacity:.0f} %)"))
        return rows


def our_hello(simulation: Simulation) -> wire.Hello:
    return wire.Hello(0, wire.PROTOCOL_VERSION, "hil", "quadrotor", MOTORS, simulation.rate,
                      tuple(wire.SensorSpec(s.name, SENSOR_FIELDS[s.name], simulation.rate / s.decimation)
                            for s in simulation.sensors))


def compatibility_problems(ours: wire.Hello, theirs: wire.Hello) -> list[tuple[int, str]]:
    """What does not match between the two HELLOs, as (GOODBYE code, words naming both values)."""
    problems = []
    if theirs.version != ours.version:
        problems.append((wire.GOODBYE_VERSION_MISMATCH,
                         f"protocol version: hil speaks {ours.version}, firmware {theirs.version}"))
        return problems
    if theirs.vehicle != ours.vehicle:
        problems.append((wire.GOODBYE_LAYOUT_MISMATCH, f"vehicle: hil flies {ours.vehicle!r}, firmware {theirs.vehicle!r}"))
    if theirs.actuators != ours.actuators:
        problems.append((wire.GOODBYE_LAYOUT_MISMATCH,
                         f"actuators: hil has {ours.actuators}, firmware sends {theirs.actuators}"))
    if theirs.tick_rate_hz not in (0, ours.tick_rate_hz):
        problems.append((wire.GOODBYE_LAYOUT_MISMATCH,
                         f"tick rate: hil runs {ours.tick_rate_hz} Hz, firmware expects {theirs.tick_rate_hz} Hz"))
    have = {s.name: s.fields for s in ours.sensors}
    for sensor in theirs.sensors:
        if sensor.name not in have:
            problems.append((wire.GOODBYE_LAYOUT_MISMATCH, f"sensor {sensor.name}: the firmware needs it, the scenario "
                                                           f"has {', '.join(have) or 'no sensors'}"))
        elif have[sensor.name] != sensor.fields:
            problems.append((wire.GOODBYE_LAYOUT_MISMATCH, f"sensor {sensor.name}: hil sends {have[sensor.name]} fields, "
                                                           f"firmware expects {sensor.fields}"))
    return problems


class Session:
    """One link to one firmware: sequence numbers, HELLO, timeouts and their policy, and the tick
    loops, which keep what they fly in the run's record (:class:`hil.record.TickRecord`)."""

    # Real time, after an overrun: release the late ticks at once to get back on the wall clock
    # (a board's clock is the wall clock), or keep their spacing and run late.
    catch_up = True
    spin_before_deadline = SPIN_BEFORE_DEADLINE  # s of each real-time period spent spinning

    def __init__(self, simulation: Simulation, link: Link, settings: LinkSettings, firmware=None, recorder=None,
                 parameters: wire.ParameterSet | None = None, firmware_name: str = ""):
        self.simulation = simulation
        # What a firmware whose HELLO asks for parameters is given (the scenario's firmware
        # section, ``firmware_name``), or None when the scenario has none to give.
        self.parameters = parameters
        self.firmware_name = firmware_name
        self.link = link
        if recorder is not None:  # a hil.flightlog.Recorder: it logs every frame, as it goes
            link.tap = recorder.packet
        self.settings = settings
        self.firmware = firmware  # a FirmwareProcess to watch, or None for a board
        # Its CPU time (clock ticks) when last looked at in this silence, to tell whether it works;
        # None when the silence has just begun.
        self._firmware_cpu: int | None = None
        # Lockstep: when the firmware's silence began (the SENSORS of the first reply missed since
        # the latest ACTUATORS arrived, or that arrival if later); None while it answers.
        self._silent_since: float | None = None
        self._heard = 0.0  # lockstep: when the latest ACTUATORS arrived (perf_counter s)
        self.seq = 1  # 0 belongs to HELLO, which never advances the counter
        self.hello = our_hello(simulation)
        self.peer_hello: wire.Hello | None = None
        # Where each named column of a trace row lies.
        self.columns = {name: slice(offset, offset + size) for name, (offset, size) in simulation.layout.items()}
        self._reading_spans = [simulation.layout[f"reading.{s.name}"] for s in simulation.sensors]
        self._fresh_offset = simulation.layout["fresh"][0]

    def _send(self, message_type, *fields) -> None:
        if message_type is wire.Hello:
            self.link.send(wire.Hello(0, *fields))
            return
        self.link.send(message_type(self.seq, *fields))
        self.seq = self.seq % (wire.UINT32 - 1) + 1

    def _check_firmware(self, tick: int) -> None:
        if self.firmware is not None and self.firmware.exit_code is not None:
            raise FirmwareDied(f"firmware {self.firmware.name} exited with status {self.firmware.exit_code} at tick "
                               f"{tick}")

    def _firmware_activity(self, tick: int):
        """A reply to ``tick`` is late: what the firmware hil started is doing (None for a board, or
        where hil cannot tell). Raises when it has exited, or is stopped and cannot answer at all."""
        self._check_firmware(tick)
        activity = getattr(self.firmware, "activity", lambda: None)()
        if activity is not None and activity.stopped:
            raise FirmwareDied(f"firmware {self.firmware.name} is stopped (SIGSTOP, or a debugger holds it) at tick "
                               f"{tick}; hil does not wait for a firmware that cannot answer")
        return activity

    def _firmware_busy(self, tick: int) -> bool:
        """True when the firmware hil started is still working on a late reply (a slow firmware on a
        loaded machine, worth waiting for); False when it is idle or hil cannot tell (a board)."""
        activity = self._firmware_activity(tick)
        if activity is None:
            return False
        busy = activity.running or self._firmware_cpu is not None and activity.cpu_ticks > self._firmware_cpu
        self._firmware_cpu = activity.cpu_ticks
        return busy

    def _hello_deadline(self, started: float) -> float:
        """When to give up waiting for HELLO: ``hello_timeout`` after ``started`` for a board; for a
        firmware hil started, ``hello_timeout`` after it said it is ready (its first line of
        output), and at the latest ``start_timeout`` after it started."""
        if self.firmware is None:
            return started + self.settings.hello_timeout
        latest = self.firmware.started + self.settings.start_timeout
        ready = self.firmware.ready_since()
        return latest if ready is None else min(ready + self.settings.hello_timeout, latest)

    def handshake(self) -> wire.Hello:
        """Send HELLO until the firmware's arrives; check that both sides agree; give the firmware
        its parameters when its HELLO asks for them.

        Garbage is collected first: between its last answer and tick 0 the firmware waits, and a
        firmware left waiting sends a HEARTBEAT, which would take a sequence number in one run and
        not in the next.
        """
        gc.collect()
        started = time.perf_counter()
        while time.perf_counter() < (deadline := self._hello_deadline(started)):
            h = self.hello
            self._send(wire.Hello, h.version, h.role, h.vehicle, h.actuators, h.tick_rate_hz, h.sensors)
            wait_until = min(deadline, time.perf_counter() + HELLO_INTERVAL)
            while (remaining := wait_until - time.perf_counter()) > 0:
                message = self.link.receive(remaining)
                if isinstance(message, wire.Hello):
                    problems = compatibility_problems(self.hello, message)
                    if problems:
                        raise SessionError("the firmware does not match this run: " + "; ".join(p for _, p in problems),
                                           problems[0][0])
                    self.peer_hello = message
                    if message.params:
                        self._give_parameters(message.params)
                    return message
                if isinstance(message, wire.Goodbye):
                    raise SessionError(f"the firmware said goodbye during HELLO: {message.reason} (code {message.code})")
            self._check_firmware(0)
        if self.firmware is not None and deadline == self.firmware.started + self.settings.start_timeout:
            said = "sent" if self.firmware.ready_since() is not None else "printed nothing and sent"
            raise SessionTimeout(f"firmware {self.firmware.name} {said} no HELLO on {self.link.describe()} within "
                                 f"{self.settings.start_timeout:g} s of its start (link.start_timeout)")
        raise SessionTimeout(
            f"no HELLO from the firmware on {self.link.describe()} within {self.settings.hello_timeout:g} s "
            f"(hil speaks protocol version {wire.PROTOCOL_VERSION}). Check that the board runs firmware with the hil "
            f"protocol, that the port and baud rate (or address) are right, and that nothing else holds the port.")

    def _give_parameters(self, wanted: str) -> None:
        """Send the firmware its parameters, one PARAM at a time, each sent again every
        HELLO_INTERVAL until its PARAM_ACK comes (docs/protocol.md section 6); the firmware's
        GOODBYE refuses one, naming it."""
        given = self.parameters
        if given is None or given.name != wanted:
            has = f"has parameter set {given.name!r}" if given is not None else "has no parameters to give"
            raise SessionError(f"the firmware asks for parameter set {wanted!r}; the scenario's firmware "
                               f"{self.firmware_name or '(none)'} {has}", wire.GOODBYE_PARAMETER)
        count = len(given.entries)
        for index, (name, values) in enumerate(given.entries):
            deadline = time.perf_counter() + self.settings.hello_timeout
            while not self._acknowledged(index, count, name, values, deadline):
                self._check_firmware(0)
                if time.perf_counter() >= deadline:
                    raise SessionTimeout(
                        f"the firmware on {self.link.describe()} took {index} of its {count} parameters, then did not "
                        f"acknowledge parameter {name} within {self.settings.hello_timeout:g} s (link.hello_timeout)")

    def _acknowledged(self, index: int, count: int, name: str, values: tuple, deadline: float) -> bool:
        """Send PARAM ``index`` once; True when its PARAM_ACK comes within HELLO_INTERVAL."""
        self._send(wire.Param, 0, index, count, name, values)
        wait_until = min(deadline, time.perf_counter() + HELLO_INTERVAL)
        while (remaining := wait_until - time.perf_counter()) > 0:
            message = self.link.receive(remaining)
            if isinstance(message, wire.ParamAck) and message.index == index:
                return True
            if isinstance(message, wire.Goodbye):
                raise SessionError(f"the firmware refused its parameters: {message.reason} (code {message.code})",
                                   wire.GOODBYE_PARAMETER)
        return False

    def send_tick(self, tick: int, row: np.ndarray) -> None:
        """Tell the firmware what tick ``tick`` (its ``row`` of the trace) sensed: a SENSORS frame."""
        fresh, values = self.sensors_message(row)
        try:
            self._send(wire.Sensors, tick, fresh, values)
        except wire.NonFinite as error:  # the wire carries finite floats only: the physics has diverged
            raise SessionError(f"tick {tick}: {self._reading_name(fresh, error.index)} is {error.value!r}; the "
                               f"physics has diverged (check the vehicle and the firmware's last commands), and "
                               f"hil sends only finite values") from None

    def _reading_name(self, fresh: int, index: int) -> str:
        """Which sensor and field value ``index`` of a SENSORS with ``fresh`` holds, in words."""
        for bit, (sensor, (_, size)) in enumerate(zip(self.simulation.sensors, self._reading_spans)):
            if fresh >> bit & 1:
                if index < size:
                    return f"sensor {sensor.name} field {index}"
                index -= size
        return f"value {index}"

    def sensors_message(self, row: np.ndarray) -> tuple[int, tuple]:
        columns = row.tolist()  # one conversion; slicing a list is cheaper than slicing the array
        fresh, values = 0, []
        for index, (offset, size) in enumerate(self._reading_spans):
            if columns[self._fresh_offset + index]:
                fresh |= 1 << index
                values += columns[offset:offset + size]
        return fresh, tuple(values)

    def goodbye(self, tick: int, code: int, reason: str) -> None:
        """Say GOODBYE, ``reason`` cut at a character to the protocol's limit of MAX_TEXT bytes."""
        try:
            self._send(wire.Goodbye, tick, code, reason.encode()[:wire.MAX_TEXT].decode(errors="ignore"))
        except LinkError:
            pass

    def new_stats(self, mode: str) -> LinkStats:
        """Statistics of a loop over this link, flying in ``mode`` (words for the summary)."""
        return LinkStats(mode, self.link.describe(), capacity=self.link.capacity_bytes_per_second(),
                         counters=self.link.counters)

    def _note(self, message, stats: LinkStats) -> None:
        if isinstance(message, wire.Status):
            stats.note_status(message)
        elif isinstance(message, wire.Goodbye):
            raise SessionError(f"the firmware ended the session: {message.reason} (code {message.code})")

    # ---- lockstep ------------------------------------------------------------------------------

    def fly_lockstep(self, program: CompiledTick | CompiledExchangeLoop, record: TickRecord, progress=None,
                     interval=0.25) -> None:
        """Fly ``program`` from its initial state into ``record``, whose ``stats`` count the link: a
        compiled tick called once per tick, or the exchange loop
        (:meth:`Simulation.compile_exchange_loop`), which flies many per call and hands a tick back
        here whenever anything but the expected reply happens."""
        with _no_garbage_collection():
            self._fly_lockstep(program, record, progress, interval)

    def _fly_lockstep(self, program, record: TickRecord, progress, interval):
        looping = isinstance(program, CompiledExchangeLoop)
        stats = record.stats
        exchange = None
        if looping:
            stats.exchanged_in_loop = 0
            exchange = Exchange(self.simulation, MOTORS, self.settings.timeout, program.batch)
        state = program.initial
        started = time.perf_counter()
        next_report = started + interval
        last = record.trace.last
        k = 0
        while k <= last:
            if looping:
                state, k, sent = self._fly_exchange_loop(program, exchange, state, k, record)
            else:
                state, out = program.advance(state, record.command)  # each call consumes the previous state
                sent = self._send_row(k, record.flown(k, out, state), stats)
                record.sent(k)
            if sent is not None:  # tick k waits for its reply here
                record.in_force(*self._settle(k, sent, record))
                k += 1
            if progress is not None and (looping or k % 64 == 0) and (now := time.perf_counter()) >= next_report:
                progress(k - 1, last, now - started)
                next_report = now + interval
        stats.wall_seconds = time.perf_counter() - started

    def _fly_exchange_loop(self, program: CompiledExchangeLoop, exchange: Exchange, state, k: int,
                           record: TickRecord):
        """Fly ticks from ``k`` in the compiled loop until one is handed back or the batch is done.

        Returns the state after the last tick flown, the next tick to fly or (when the loop handed
        a tick back) that tick, and then the perf_counter time its SENSORS went out; None when
        every tick flown was answered.
        """
        n = record.room(k, min(program.batch, record.trace.last + 1 - k))
        exchange.aim(self.link.endpoint(), record.trace.span(k, n), self.seq, self.link.last_seq)
        state, command, flown_count, stop = program.fly(state, record.command, n, exchange.address)
        self.seq = exchange.context.seq
        entries = exchange.entries()
        replied = stop in (compiled_exchange.REPLIED, compiled_exchange.PAUSED)
        answered = flown_count if replied else flown_count - 1
        sent_lengths, received_lengths = entries["sent_length"], entries["received_length"]
        frames_sent = int(np.count_nonzero(sent_lengths))
        self.link.exchanged(frames_sent, int(sent_lengths.sum()), answered, int(received_lengths.sum()),
                            exchange.context.last_seq if answered else None)
        stats = record.stats
        stats.sensors_sent += frames_sent
        stats.actuators_received += answered
        stats.round_trips.extend(((entries["received_ns"][:answered] - entries["sent_ns"][:answered]) * 1e-9).tolist())
        stats.exchanged_in_loop += answered
        record.exchanged(k, entries, answered, state, command)
        if answered:
            self._silent_since = None
        if replied:
            return state, k + flown_count, None
        tick = k + answered
        if stop == compiled_exchange.SEND_FAILED:
            raise self.link.transmit_error(exchange.send_error())
        if exchange.context.leftover_length:
            self.link.ingest(exchange.leftover())
        if entries[-1]["sent_length"]:
            sent = int(entries[-1]["sent_ns"]) * 1e-9
        else:
            sent = self._send_row(tick, record.trace.row(tick), stats)
        record.sent(tick)
        return state, tick, sent

    def _send_row(self, tick: int, row: np.ndarray, stats: LinkStats) -> float:
        """Send tick ``tick``'s SENSORS from its ``row`` of the trace; returns when it went out."""
        sent = time.perf_counter()
        self.send_tick(tick, row)
        stats.sensors_sent += 1
        return sent

    def _settle(self, k: int, sent: float, record: TickRecord):
        """Wait for tick ``k``'s reply to the SENSORS sent at ``sent``, or meet the timeout policy.
        Returns the command in force for the next tick and the tick whose reply it is."""
        timeout, stats = self.settings.timeout, record.stats
        command, command_tick = record.command, record.command_tick
        reply, newest = self._await(k, sent + timeout, command_tick, stats)
        if reply is None:
            reply, newest = self._await_busy(k, sent, command_tick, newest, record)
        if isinstance(reply, wire.Actuators):
            stats.round_trips.append(time.perf_counter() - sent)
            newest = reply
        elif isinstance(reply, Undelivered):
            stats.lost_replies += 1  # the link's own faults: the command in force stays, as on a real line
        else:
            stats.late_replies += 1
            stats.lost_replies += 1
            policy = self.settings.on_timeout
            stats.policy_applied[policy] = stats.policy_applied.get(policy, 0) + 1
            if policy == "abort":
                record.unanswered()
                raise SessionTimeout(f"no reply for tick {k} from {self.link.describe()} in the "
                                     f"{time.perf_counter() - sent:.3g} s since its SENSORS went out (link.timeout "
                                     f"{timeout:g} s, and longer while the firmware hil started was busy); the "
                                     f"scenario's policy is to abort")
            if policy == "cut":
                command, newest = NO_THRUST, None
        if newest is not None:
            command_tick, command = newest.tick, _throttles(newest.values)
        return command, command_tick

    def _await_busy(self, k: int, sent: float, command_tick: int, newest, record: TickRecord):
        """Tick ``k``'s reply missed its timeout: go on waiting while the firmware hil started is
        busy, so that a slow firmware does not make a lockstep run depend on the machine's load.
        Returns the reply, or None when the policy applies; the run fails once the firmware has
        sent no ACTUATORS at all (a late one for an older tick ends a silence too, as in real time)
        for ``link.silence`` s, busy or not."""
        if self._silent_since is None:  # a silence begins: what the firmware did before is no sign of work
            self._silent_since = max(sent, self._heard)
            self._firmware_cpu = None
        while (now := time.perf_counter()) - self._silent_since < self.settings.silence:
            if not self._firmware_busy(k):
                return None, newest
            wait_until = min(now + self.settings.timeout, self._silent_since + self.settings.silence)
            reply, newer = self._await(k, wait_until, max(command_tick, newest.tick if newest else -1), record.stats)
            newest = newer or newest
            if reply is not None:
                return reply, newest
            if self._silent_since is None:  # a late reply came meanwhile: a new silence, from then
                self._silent_since = self._heard
        record.unanswered()
        raise SessionTimeout(f"no reply from {self._peer_name()} for {self.settings.silence:g} s (link.silence), at "
                             f"tick {k}; the run cannot go on, whatever link.on_timeout says")

    def _peer_name(self) -> str:
        return f"firmware {self.firmware.name}" if self.firmware is not None else self.link.describe()

    def _await(self, tick: int, deadline: float, command_tick: int, stats: LinkStats):
        """Wait for the reply to ``tick``: returns it (or the link's word that it will not come, or None
        at the deadline), and the newest older reply that arrived meanwhile and is newer than the
        reply to ``command_tick``, in force (a delayed one), or None."""
        newest = None
        while (remaining := deadline - time.perf_counter()) > 0:
            message = self.link.receive(remaining)
            if isinstance(message, wire.Actuators):
                if not self._well_sized(message):
                    continue
                if message.tick > tick:
                    stats.unexpected += 1
                    continue
                self._silent_since, self._heard = None, time.perf_counter()
                stats.actuators_received += 1
                if message.tick == tick:
                    return message, None
                stats.late_replies += 1
                if message.tick > max(command_tick, newest.tick if newest else -1):
                    newest = message
            elif isinstance(message, Undelivered):
                if message.tick == tick:
                    return message, newest
            elif message is not None:
                self._note(message, stats)
        return None, newest

    def _well_sized(self, reply: wire.Actuators) -> bool:
        """Whether ``reply`` carries the agreed number of values; another count is a ``message`` error
        (docs/protocol.md §3, §9), counted with the link's bad frames and dropped."""
        if len(reply.values) == MOTORS:
            return True
        self.link.counters.stream.count("message")
        return False

    def _drain_replies(self, sent_at: dict, stats: LinkStats) -> None:
        """After the last tick: give the replies still in flight one timeout to arrive."""
        deadline = time.perf_counter() + self.settings.timeout
        while sent_at and (remaining := deadline - time.perf_counter()) > 0:
            message = self.link.receive(remaining)
            if isinstance(message, wire.Actuators) and message.tick in sent_at:
                stats.round_trips.append(time.perf_counter() - sent_at.pop(message.tick))
                stats.actuators_received += 1

    # ---- real time -----------------------------------------------------------------------------

    def fly_realtime(self, program: CompiledTick, record: TickRecord, progress=None, interval=0.25) -> None:
        """Release tick k at start + k / rate; apply each command from the first tick after it
        arrived. Flies into ``record``, whose ``stats`` count the link."""
        with _no_garbage_collection():
            self._fly_realtime(program, record, progress, interval)

    def _fly_realtime(self, program: CompiledTick, record: TickRecord, progress, interval):
        stats = record.stats
        period = self.simulation.dt
        sent_at = {}
        state = program.initial
        last = record.trace.last
        start = time.perf_counter() + 0.01
        next_report = start + interval
        pending = None  # the newest reply received since the last release: (tick, values)
        timeout, policy = self.settings.timeout, self.settings.on_timeout
        spin = self.spin_before_deadline
        unanswered_since = None  # when the oldest tick sent since the newest reply went out
        silent = False  # the firmware has been silent for longer than the timeout, and the policy applied
        try:
            for k in range(last + 1):
                deadline = start + k * period
                # Wait for the deadline listening to the link, so replies are timed as they arrive;
                # spin the last stretch, since waking from a sleep is late by tens of µs.
                while True:
                    remaining = deadline - spin - time.perf_counter()
                    message = self.link.receive(max(remaining, 0.0))
                    if message is None and remaining <= 0:
                        break
                    if isinstance(message, wire.Actuators):
                        if not self._well_sized(message):
                            continue
                        if message.tick >= k:  # a reply to a tick not sent yet (§9): never in force
                            stats.unexpected += 1
                            continue
                        arrived = time.perf_counter()
                        unanswered_since, silent = None, False
                        if message.tick in sent_at:
                            stats.round_trips.append(arrived - sent_at.pop(message.tick))
                        stats.actuators_received += 1
                        if message.tick > max(record.command_tick, pending[0] if pending else -1):
                            pending = (message.tick, message.values)
                        else:
                            stats.late_replies += 1
                    elif message is not None and not isinstance(message, Undelivered):
                        self._note(message, stats)
                while time.perf_counter() < deadline:
                    pass
                released = time.perf_counter()
                lateness = released - deadline
                stats.period_errors.append(lateness)
                if lateness > period:
                    stats.overruns += 1
                    if not self.catch_up:
                        start += lateness  # the ticks after an overrun keep their spacing
                command, command_tick = record.command, record.command_tick
                if pending is not None:
                    command_tick, values = pending
                    command = _throttles(values)
                    pending = None
                elif unanswered_since is not None and (quiet := released - unanswered_since) > timeout:
                    if quiet > self.settings.silence:
                        raise SessionTimeout(f"no reply from {self._peer_name()} for {self.settings.silence:g} s "
                                             f"(link.silence), at tick {k}; the run cannot go on, whatever "
                                             f"link.on_timeout says")
                    if not silent:
                        silent = True
                        stats.late_replies += 1
                        self._firmware_activity(k)
                        stats.policy_applied[policy] = stats.policy_applied.get(policy, 0) + 1
                        if policy == "abort":
                            raise SessionTimeout(f"no reply from {self.link.describe()} for {timeout:g} s, at tick "
                                                 f"{k}; the scenario's policy is to abort")
                        if policy == "cut":
                            command = NO_THRUST
                record.in_force(command, command_tick)  # tick k - 1 flies it to tick k
                state, out = program.advance(state, command)
                row = record.flown(k, out, state)
                sent_at[k] = time.perf_counter()
                if unanswered_since is None:
                    # Silence counts from a tick the firmware could answer: hil's own stalls are not its.
                    unanswered_since = sent_at[k]
                self.send_tick(k, row)
                record.sent(k)
                stats.sensors_sent += 1
                if len(sent_at) > 1000:  # replies this old will not come: count them lost
                    for old in [t for t in sent_at if t < k - 1000]:
                        del sent_at[old]
                        stats.lost_replies += 1
                if k % 256 == 0:
                    self._check_firmware(k)
                if progress is not None and k % 64 == 0 and (now := time.perf_counter()) >= next_report:
                    progress(k, last, now - start)
                    next_report = now + interval
        finally:
            # However the run ends, the command in force flies on from the tick sent last, as a
            # board's clock goes on whether or not a reply comes.
            record.in_force(record.command, record.command_tick)
        stats.wall_seconds = time.perf_counter() - start
        self._drain_replies(sent_at, stats)
        stats.lost_replies += len(sent_at)


def _throttles(values) -> tuple[float, ...]:
    """A reply's motor values as the command in force: throttles in [0, 1] (the wire decoder
    refuses NaN and infinities on receipt, so every value compares).
    In Python: for four values, np.clip costs ten times as much, and the tick's command input
    and the trace row take a tuple as they are."""
    return tuple(0.0 if v < 0.0 else 1.0 if v > 1.0 else v for v in values)


@contextlib.contextmanager
def _no_garbage_collection():
    """Python's cyclic collector pauses a loop for milliseconds at a time: it has collected during
    the handshake, and does not run during the loop."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
