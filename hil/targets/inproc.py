"""``inproc://quad_pid``: hil's emulated firmware inside the compiled tick, no process and no link.

The fastest way to fly a scenario, and bit-identical from its seed; the firmware's command flies
from the tick after the readings it answers, as a link in lockstep would deliver it. It has no
pacing and no link faults: there is no link.
"""

from dataclasses import dataclass, replace

from hil.scenario import FIRMWARE_RUNTIMES, Scenario
from hil.targets import RunRefused, Target, TargetError, Url


def refuse_runtime(target: Target, scenario: Scenario) -> None:
    """:class:`RunRefused` unless the scenario's firmware runs as ``target.runtime`` (``c``,
    ``python``, ``in-process``), or when the target names another firmware than the scenario's."""
    Target.for_scenario(target, scenario)  # a Betaflight scenario is refused there
    target.refuse_unless_firmware_runs_here(scenario)
    name = scenario.firmware.name
    named = target.firmware
    if named is not None and named != name:
        raise RunRefused(f"target {target.url} flies firmware {named}, and scenario {scenario.name} is written for "
                         f"firmware {name} (its settings are {name}'s); give {target.url.split('://')[0]}://{name}")


def firmware_name(name: str, runtime: str) -> str | None:
    """The emulated firmware a URL names (``name``, empty for the scenario's: None), one that runs as ``runtime``."""
    if not name:
        return None
    known = [each for each, runtimes in FIRMWARE_RUNTIMES.items() if runtime in runtimes]
    if name not in known:
        raise TargetError(f"no emulated firmware {name!r} runs as {runtime}; those that do: {', '.join(known)}")
    return name


@dataclass(frozen=True)
class InProcessTarget(Target):
    firmware: str | None = None  # the emulated firmware; None: the scenario's

    SCHEMES = ("inproc",)
    FORMS = (("inproc://quad_pid", "the emulated firmware inside the compiled tick (fastest; no link)"),)
    RUNTIME = "in-process"
    LINK = False

    @classmethod
    def from_url(cls, url: Url) -> "InProcessTarget":
        where, _ = url.split(())
        return cls(firmware_name(where, cls.RUNTIME))

    @property
    def url(self) -> str:
        return f"inproc://{self.firmware or ''}"

    def describe(self, scenario: Scenario) -> str:
        return f"{scenario.firmware.name} (in-process)"

    def for_scenario(self, scenario: Scenario) -> "InProcessTarget":
        refuse_runtime(self, scenario)
        return replace(self, firmware=scenario.firmware.name)
