"""What hil flies, named by a URL as pyserial names ports.

``inproc://quad_pid``, ``c://quad_pid``, ``udp://192.168.1.50:9000``,
``serial:///dev/ttyACM0?baud=921600``, ``betaflight-sitl://``, ``cmd://my_sitl --udp {udp}``,
``qemu://stm32f405``: each
kind of target is one module of this package and one entry of :data:`TARGETS`; :func:`parse` turns
a URL into its :class:`Target`. A kind owns

- which scenarios it can fly (:meth:`Target.check`) and the scenario section it reads;
- how its firmware starts and stops and the link hil reaches it over (:meth:`Target.open`);
- its pacing, lockstep or real time, and its defaults (:meth:`Target.realtime_for`);
- whether it is here at all (:meth:`Target.absent`) and what two runs at once must not both use
  (:meth:`Target.shared`), which the pytest plugin skips and locks on.

The options that chose a target before there were URLs (``--firmware``, ``--firmware-cmd``,
``--port``, ``--baud``, ``--udp``, ``--bind``) build the same targets through
:func:`from_options`, so there is one way in.

Nothing here imports JAX or a link: ``hil run -h``, a bad URL and the pytest plugin's options
are answered without them. A target imports its link and session when it opens them.
"""

from dataclasses import dataclass
from typing import ClassVar

from hil.scenario import FIRMWARE_RUNTIMES, Scenario


class RunRefused(ValueError):
    """The run asked for cannot be flown (bad usage): nothing was started."""


class TargetError(RunRefused):
    """A URL or an option that names no target, or names one wrongly."""


@dataclass
class Peer:
    """The far end of a run's link, filled in as it is opened, so that whatever was opened is closed."""

    firmware: object = None  # the process hil started (FirmwareProcess, Betaflight's SITL), stopped at the end
    link: object = None  # a hil.bridges.link.Link
    session: object = None  # a hil.session.Session on the link


# The pacing a URL may ask for (?pacing=...): True real time, False lockstep.
PACINGS = {"lockstep": False, "realtime": True}


@dataclass(frozen=True)
class Url:
    """A target URL as its kind reads it: ``SCHEME://REST``, REST being ``WHERE?NAME=VALUE&...``."""

    scheme: str
    rest: str

    def split(self, parameters: tuple[str, ...]) -> tuple[str, dict[str, str]]:
        """What comes before ``?``, and the query's parameters; one the kind does not take, one
        given twice or one without a value is refused, naming those it takes."""
        where, _, query = self.rest.partition("?")
        given: dict[str, str] = {}
        for item in filter(None, query.split("&")):
            name, separator, value = item.partition("=")
            takes = f"it takes {', '.join(parameters)}" if parameters else "it takes none"
            if name not in parameters:
                raise TargetError(f"{self.scheme}:// has no parameter {name!r} ({takes})")
            if not separator or not value:
                raise TargetError(f"parameter {name!r} has no value (write {name}=VALUE)")
            if name in given:
                raise TargetError(f"parameter {name!r} is given twice")
            given[name] = value
        return where, given


def pacing(value: str | None) -> bool | None:
    """A URL's ``pacing`` parameter: True for real time, False for lockstep, None when not given."""
    if value is None:
        return None
    if value not in PACINGS:
        raise TargetError(f"pacing={value}: give pacing=lockstep or pacing=realtime")
    return PACINGS[value]


def pacing_query(realtime: bool | None) -> str:
    """``pacing=...`` for a canonical URL, or nothing when the kind's default pacing applies."""
    return "" if realtime is None else f"pacing={'realtime' if realtime else 'lockstep'}"


def with_query(where: str, *parameters: str) -> str:
    query = "&".join(p for p in parameters if p)
    return f"{where}?{query}" if query else where


class Target:
    """Something hil flies. Each kind is a frozen dataclass: two targets built alike, from a URL or
    from the old options, are equal."""

    SCHEMES: ClassVar[tuple[str, ...]] = ()
    # (an example URL, what it flies): hil run -h, and the message for a URL that names no target.
    FORMS: ClassVar[tuple[tuple[str, str], ...]] = ()
    RUNTIME: ClassVar[str] = ""  # what a run's result and its log's header call what flew
    REALTIME: ClassVar[bool] = False  # its pacing unless told otherwise: a board keeps its own clock
    LINK: ClassVar[bool] = True  # False: the firmware flies inside the compiled tick, no link, no pacing
    SPEAKS_HIL: ClassVar[bool] = True  # it speaks hil's protocol (Betaflight's SITL does not)

    @classmethod
    def claims(cls, scheme: str) -> bool:
        return scheme in cls.SCHEMES

    @classmethod
    def from_url(cls, url: Url) -> "Target":
        raise NotImplementedError

    @property
    def url(self) -> str:
        """The target's URL, written out whole: what a log's header records."""
        raise NotImplementedError

    @property
    def runtime(self) -> str:
        return self.RUNTIME

    def describe(self, scenario: Scenario) -> str:
        """What flies, in words: `quad_pid (c)`, `a board on /dev/ttyACM0 at 921600 baud`, a command line."""
        raise NotImplementedError

    def for_scenario(self, scenario: Scenario) -> "Target":
        """This target as it flies ``scenario`` (a kind whose URL may leave out the firmware names
        the scenario's); :class:`RunRefused` when it cannot fly it. A firmware that speaks hil's
        protocol flies a mission; a Betaflight scenario needs Betaflight's SITL and its pilot."""
        if "sitl" in FIRMWARE_RUNTIMES[scenario.firmware.name] and self.SPEAKS_HIL:
            raise RunRefused(f"scenario {scenario.name} flies Betaflight's SITL with a pilot on its sticks; "
                             f"{self.runtime} firmware speaks hil's own protocol and flies a mission")
        return self

    def refuse_unless_firmware_runs_here(self, scenario: Scenario) -> None:
        """:class:`RunRefused` unless the scenario's firmware runs as this target's runtime
        (``FIRMWARE_RUNTIMES``: ``c``, ``python``, ``in-process``, ``sitl``)."""
        allowed = FIRMWARE_RUNTIMES[scenario.firmware.name]
        if self.runtime not in allowed:
            raise RunRefused(f"scenario {scenario.name} flies firmware {scenario.firmware.name}, which runs as "
                             f"{' or '.join(allowed)}, not {self.runtime}")

    def realtime_for(self, realtime: bool | None) -> bool:
        """Whether the run is paced in real time: as asked (``--realtime``/``--lockstep``), else as
        the URL says (``pacing=``), else the kind's default."""
        asked = getattr(self, "realtime", None)
        return realtime if realtime is not None else asked if asked is not None else self.REALTIME

    def absent(self) -> str | None:
        """Why this target cannot fly here at all (nothing to start, no port), or None."""
        return None

    def shared(self) -> str | None:
        """What two runs at once must not both use (a board, fixed ports), or None when each run
        gets its own (a process hil starts on a free port)."""
        return None

    def open(self, peer: Peer, scenario: Scenario, simulation, faults, recorder) -> None:
        """Start the firmware (if hil starts one) and open the link into ``peer``, with the
        scenario's link faults (``faults``, a hil.faults.LinkFaultPlan) injected, and the session
        that flies it, which logs every frame to ``recorder``."""
        from hil.bridges.impairment import ImpairedLink
        from hil.session import Session
        from hil.tick.firmware import parameter_set

        self.connect(peer, scenario)
        if faults:
            peer.link = ImpairedLink(peer.link, faults)
        peer.session = Session(simulation, peer.link, scenario.link, peer.firmware, recorder,
                               parameter_set(scenario), scenario.firmware.name)

    def connect(self, peer: Peer, scenario: Scenario) -> None:
        """Start the firmware, if hil starts one, and open the link: ``peer.firmware``, ``peer.link``."""
        raise NotImplementedError


# The registry: a new kind of target is a module of this package and one entry here.
from hil.targets.betaflight import BetaflightTarget  # noqa: E402  (each kind subclasses Target)
from hil.targets.cmd import CommandTarget  # noqa: E402
from hil.targets.inproc import InProcessTarget  # noqa: E402
from hil.targets.process import ProcessTarget  # noqa: E402
from hil.targets.qemu import QemuTarget  # noqa: E402
from hil.targets.serial import SerialTarget  # noqa: E402
from hil.targets.udp import UdpTarget  # noqa: E402

# In the order their schemes are tried: the serial kind claims any scheme pyserial has a handler for.
TARGETS: tuple[type[Target], ...] = (InProcessTarget, ProcessTarget, UdpTarget, SerialTarget, BetaflightTarget,
                                     CommandTarget, QemuTarget)


def forms() -> list[tuple[str, str]]:
    """Every kind's example URLs with what each flies."""
    return [form for kind in TARGETS for form in kind.FORMS]


def forms_text(indent: str = "  ") -> str:
    shown = forms()
    width = max(len(url) for url, _ in shown)
    return "\n".join(f"{indent}{url.ljust(width)}  {what}" for url, what in shown)


def parse(text: str) -> Target:
    """The target ``text`` names; :class:`TargetError` naming what is wrong and listing the forms."""
    scheme, separator, rest = text.partition("://")
    kind = next((k for k in TARGETS if k.claims(scheme.lower())), None) if separator and scheme else None
    try:
        if kind is None:
            raise TargetError("not a target URL (SCHEME://...)" if not separator
                              else f"{scheme}:// is no kind of target hil knows")
        return kind.from_url(Url(scheme.lower(), rest))
    except TargetError as error:
        raise TargetError(f"{text!r}: {error}; the forms are:\n{forms_text()}") from None


def default(scenario: Scenario) -> Target:
    """What flies ``scenario`` when nothing is named: its firmware as ``firmware.runs`` says."""
    runtime = scenario.firmware.runtime
    if runtime == "in-process":
        return InProcessTarget(scenario.firmware.name)
    if runtime == "sitl":
        return BetaflightTarget()
    return ProcessTarget(runtime, scenario.firmware.name)


def from_options(runtime: str | None = None, firmware_command: str | None = None, port: str | None = None,
                 baud: int | None = None, udp: str | None = None, bind: str | None = None) -> Target | None:
    """The target the old options name, None when none is given (the scenario's own firmware
    flies): ``runtime`` (``--firmware``: c, python, in-process), ``firmware_command``
    (``--firmware-cmd``), ``port`` and ``baud`` (``--port``, ``--baud``), ``udp`` and ``bind``
    (``--udp``, ``--bind``). It is the target the same URL names; :class:`TargetError` names the
    option whose value is refused."""
    if port and udp:
        raise TargetError("give --port or --udp, not both")
    if (port or udp) and (runtime or firmware_command):
        raise TargetError("--firmware and --firmware-cmd start a firmware; they cannot be combined with --port "
                          "or --udp")
    if runtime and firmware_command:
        raise TargetError("give --firmware or --firmware-cmd, not both")
    if udp:
        return UdpTarget.from_options(udp, bind)
    if port:
        return SerialTarget.from_options(port, baud)
    if firmware_command is not None:
        return CommandTarget.from_options(firmware_command)
    if runtime == "in-process":
        return InProcessTarget()
    if runtime == "sitl":
        return BetaflightTarget()
    if runtime:
        return ProcessTarget(runtime)
    return None
