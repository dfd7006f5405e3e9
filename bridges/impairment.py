"""A link that loses, duplicates, corrupts and delays frames as the scenario's link faults say.

It wraps the real link at hil's end, so the firmware meets real damage on a real transport: a
lost SENSORS frame is never sent, a corrupted one goes out with a bit flipped (the firmware's
CRC check must reject it), a duplicated one goes out twice with the same sequence number. Going
the other way, a received ACTUATORS frame is dropped, corrupted and run through the decoder
(which rejects it and counts a bad frame), delivered twice (the duplicate is dropped and
counted), or held back for the delay. Which frames is decided per tick from the scenario key
(:class:`hil.faults.LinkFaultPlan`), so a lockstep run under faults is still deterministic.

Where hil itself made a tick's reply impossible, ``receive`` says so with
:class:`~hil.bridges.link.Undelivered` instead of letting the loop wait for its timeout.
"""

import collections

from hil import wire
from hil.bridges.link import Link, Undelivered
from hil.faults import LinkFaultPlan, flip_bit


class ImpairedLink(Link):
    def __init__(self, link: Link, plan: LinkFaultPlan):
        super().__init__()
        self.link = link
        self.plan = plan
        self.counters = link.counters
        self._notices: collections.deque = collections.deque()  # Undelivered, in the order they happened
        self._held: collections.deque = collections.deque()  # (release tick, ACTUATORS) delayed replies
        self._now = -1  # the newest tick whose SENSORS went out: delayed replies are released by it

    @property
    def tap(self):
        return self.link.tap

    @tap.setter
    def tap(self, value):
        if hasattr(self, "link"):
            self.link.tap = value

    def describe(self) -> str:
        return self.link.describe()

    def capacity_bytes_per_second(self):
        return self.link.capacity_bytes_per_second()

    def close(self) -> None:
        self.link.close()

    def _count(self, what: str) -> None:
        self.counters.injected[what] = self.counters.injected.get(what, 0) + 1

    def transmit(self, frame: bytes) -> None:
        self.link.transmit(frame)

    def send(self, message: wire.Message) -> None:
        if not isinstance(message, wire.Sensors):
            self.link.send(message)
            return
        self._now = max(self._now, message.tick)
        decision = self.plan.decision(message.tick, outbound=True)
        if decision is None:
            self.link.send(message)
            return
        frame = wire.encode(message)
        if decision.lost:
            self._count("outbound lost")
            self._notices.append(Undelivered(message.tick, "SENSORS lost on the way out"))
            return
        if decision.corrupted:
            self._count("outbound corrupted")
            frame = flip_bit(frame, decision.where)
            self._notices.append(Undelivered(message.tick, "SENSORS corrupted on the way out"))
        copies = 2 if decision.duplicated else 1
        if decision.duplicated:
            self._count("outbound duplicated")
        for _ in range(copies):
            self.link.transmit(frame)
            self.counters.frames_sent += 1

    def receive(self, timeout: float):
        if self._notices:
            return self._notices.popleft()
        if self._held and self._held[0][0] <= self._now:
            return self._held.popleft()[1]
        message = self.link.receive(timeout)
        if not isinstance(message, wire.Actuators):
            return message
        decision = self.plan.decision(message.tick, outbound=False)
        if decision is None:
            return message
        if decision.lost:
            self._count("inbound lost")
            return Undelivered(message.tick, "ACTUATORS lost on the way in")
        if decision.corrupted:
            self._count("inbound corrupted")
            try:
                message = wire.decode(flip_bit(wire.encode(message), decision.where)[:-1])
            except wire.FrameError as error:
                self.counters.stream.count(error.kind)
                return Undelivered(message.tick, "ACTUATORS corrupted on the way in")
        if decision.duplicated:
            self._count("inbound duplicated")
            self.link._accept(message)  # the copy repeats the sequence number: dropped and counted
        if decision.delay:
            self._count("inbound delayed")
            self._held.append((message.tick + decision.delay, message))
            return Undelivered(message.tick, f"ACTUATORS delayed by {decision.delay} ticks")
        return message
