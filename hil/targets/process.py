"""``c://quad_pid``, ``python://quad_pid``: hil's emulated firmware as its own process, over UDP.

hil builds the C firmware on demand (or runs the Python one), starts it on a free UDP port on
loopback, says HELLO and flies it, by default in lockstep (``?pacing=realtime`` for real time),
and stops it when the run ends. The firmware's settings (gains, mission) come from the
scenario's ``firmware`` section, its link's from ``link``.
"""

from dataclasses import dataclass, replace

from hil.scenario import Scenario
from hil.targets import Peer, Target, TargetError, Url, pacing, pacing_query, with_query
from hil.targets.inproc import firmware_name, refuse_runtime


@dataclass(frozen=True)
class ProcessTarget(Target):
    language: str  # c or python
    firmware: str | None = None  # the emulated firmware; None: the scenario's
    realtime: bool | None = None  # the URL's pacing; None: lockstep

    SCHEMES = ("c", "python")
    FORMS = (("c://quad_pid", "the emulated firmware in C as its own process over UDP, in lockstep"),
             ("python://quad_pid", "the same in Python (also python://open_loop)"))

    def __post_init__(self):
        if self.language not in self.SCHEMES:
            raise TargetError(f"{self.language!r} is not a language hil's emulated firmware is built in "
                              f"({' or '.join(self.SCHEMES)})")

    @classmethod
    def from_url(cls, url: Url) -> "ProcessTarget":
        where, parameters = url.split(("pacing",))
        return cls(url.scheme, firmware_name(where, url.scheme), pacing(parameters.get("pacing")))

    @property
    def runtime(self) -> str:
        return self.language

    @property
    def url(self) -> str:
        return with_query(f"{self.language}://{self.firmware or ''}", pacing_query(self.realtime))

    def describe(self, scenario: Scenario) -> str:
        return f"{scenario.firmware.name} ({self.language})"

    def for_scenario(self, scenario: Scenario) -> "ProcessTarget":
        refuse_runtime(self, scenario)
        return replace(self, firmware=scenario.firmware.name)

    def connect(self, peer: Peer, scenario: Scenario) -> None:
        from hil import firmware_process
        from hil.bridges.udp import UdpLink

        address = f"127.0.0.1:{firmware_process.free_udp_port()}"
        peer.firmware = firmware_process.FirmwareProcess(firmware_process.command(scenario, self.language, address),
                                                         f"{scenario.firmware.name} ({self.language})")
        peer.link = UdpLink(address)
