"""The record of a run's ticks: what every loop that flies a run keeps, kept in one place.

Whichever loop flies a run (the table of drivers in :mod:`hil.runner`), what it has flown goes
through one :class:`TickRecord`: the trace's rows and how many ticks are done, the command in
force and the tick whose reply it is, the flight log's recorder and the link's statistics.

The rule of a row lives here: row k holds the command flown from tick k to k + 1. The physics
writes into a tick's row the command it flew *into* the tick, from k - 1; over a link the command
flown from k is the one in force once tick k's reply has come (lockstep) or once tick k + 1 is
released (real time), so a row is finished, done and recorded then, and not before. Replay reads
the rule backwards (:func:`commands_flown_into`).
"""

import numpy as np

from hil.trace import Trace


class TickRecord:
    """One run's ticks as they are flown, whichever loop flies them."""

    def __init__(self, trace: Trace, recorder=None):
        """``recorder``: the run's :class:`hil.flightlog.Recorder`, or None when no log is written."""
        self.trace = trace
        self.recorder = recorder
        self.stats = None  # the link's LinkStats (hil.session), from when a loop over a link begins
        offset, size = trace.layout["command"]
        self._command = slice(offset, offset + size)
        self.command = (0.0,) * size  # the command in force: no thrust before the firmware's first reply
        self.command_tick = -1  # the tick whose reply the command in force is; -1 before any
        self.state = None  # the state after the last tick flown; None before tick 0
        self._waiting = None  # (tick, state after it): sent, its command not known yet

    @property
    def ticks_done(self) -> int:
        return self.trace.ticks_done

    def room(self, tick: int, count: int) -> int:
        """How many of ``count`` ticks from ``tick`` one call of a batched loop may fly: in a
        recorded run a tick due for a SNAPSHOT ends its call, since the log needs its state."""
        return count if self.recorder is None else min(count, self.recorder.batch_limit(tick))

    # ---- the firmware inside the tick ----------------------------------------------------------

    def batch(self, tick: int, rows: np.ndarray, state) -> None:
        """In-process: ``rows`` of the ticks from ``tick`` on, flown with ``state`` after the last.
        The firmware inside the tick wrote each row's command, its answer to that tick's readings,
        which is what flies from the tick to the next: they are done as they are."""
        self.trace.span(tick, len(rows))[:] = rows
        self.state = state
        if self.recorder is not None:
            self.recorder.ticks(tick, len(rows), state)
        self.trace.ticks_done = tick + len(rows)

    # ---- over a link ---------------------------------------------------------------------------

    def flown(self, tick: int, row: np.ndarray, state) -> np.ndarray:
        """Tick ``tick`` is flown: its ``row`` as the physics gave it, and the ``state`` after it.
        Returns the trace's row, which its SENSORS is sent from."""
        held = self.trace.row(tick)
        held[:] = row
        self.state = state
        return held

    def sent(self, tick: int) -> None:
        """Tick ``tick``'s SENSORS went out: the tick waits for the command that flies from it."""
        self._waiting = (tick, self.state)

    def in_force(self, command: tuple, reply_tick: int) -> None:
        """``command``, the reply to ``reply_tick``, is in force from now on: the tick waiting for it
        flies it to the next, so that tick's row holds it, and the tick is done and recorded."""
        self.command, self.command_tick = command, reply_tick
        if self._waiting is None:
            return
        tick, state = self._waiting
        self._waiting = None
        self.trace.row(tick)[self._command] = command
        if self.recorder is not None:
            self.recorder.tick(tick, state)
        self.trace.ticks_done = tick + 1

    def unanswered(self) -> None:
        """Lockstep ends at the timeout waiting for the reply to the tick sent last: that tick is
        done (judged as flown, with the command in force in its row) but not recorded, since no
        command flew from it."""
        tick, _ = self._waiting
        self._waiting = None
        self.trace.ticks_done = tick + 1

    def exchanged(self, tick: int, entries: np.ndarray, answered: int, state, command: tuple) -> None:
        """The compiled exchange (:mod:`hil.bridges.compiled_exchange`) flew ticks from ``tick``
        and wrote their rows as the physics gave them; the first ``answered`` were answered in its
        loop (``entries``: its journal), ``state`` is the state after the last tick flown and
        ``command`` the command in force after it. Each answered tick's command is the one the
        next tick was flown into, the last's the one in force: they are done and recorded. A tick
        handed back after them waits (:meth:`sent`) for the session to settle it."""
        self.state = state
        if answered:
            commands = self.trace.span(tick, answered)[:, self._command]
            commands[:-1] = commands[1:]
            commands[-1] = command
            self.command, self.command_tick = command, tick + answered - 1
        if self.recorder is not None:
            self.recorder.exchanged(tick, entries, answered, state)
        self.trace.ticks_done = tick + answered


def commands_flown_into(rows: np.ndarray, before, layout: dict, into: np.ndarray) -> None:
    """Replay: the command each of ``rows``' ticks was flown into, written into ``into`` (which
    may be longer): the command column of the row before each, ``before`` for the first."""
    offset, size = layout["command"]
    into[0] = before
    into[1:len(rows)] = rows[:-1, offset:offset + size]
