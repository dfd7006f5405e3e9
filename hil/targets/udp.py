"""``udp://HOST:PORT``: a board (or any firmware hil does not start) on the network.

hil binds to loopback unless told otherwise (``?bind=0.0.0.0:0`` to reach another host), hears
only the board's address, and flies it in real time, as a board keeps its own clock
(``?pacing=lockstep`` waits for each reply instead). ``--udp HOST:PORT --bind HOST:PORT`` name
the same target.
"""

from dataclasses import dataclass

from hil.scenario import Scenario
from hil.targets import Peer, Target, TargetError, Url, pacing, pacing_query, with_query

DEFAULT_BIND = "127.0.0.1:0"


def _address(text: str, local: bool) -> str:
    """``text`` if it is HOST:PORT (a local address may end in port 0, any free port)."""
    from hil.bridges.link import LinkError
    from hil.bridges.udp import parse_address

    try:
        parse_address(text, local=local)
    except LinkError as error:
        raise TargetError(str(error)) from None
    return text


@dataclass(frozen=True)
class UdpTarget(Target):
    address: str  # the board's HOST:PORT
    bind: str = DEFAULT_BIND  # hil's own end
    realtime: bool | None = None  # the URL's pacing; None: real time

    SCHEMES = ("udp",)
    FORMS = (("udp://192.168.1.50:9000", "a board on the network, in real time (?bind=0.0.0.0:0 to bind beyond "
                                         "loopback, ?pacing=lockstep)"),)
    RUNTIME = "board"
    REALTIME = True

    @classmethod
    def from_url(cls, url: Url) -> "UdpTarget":
        where, parameters = url.split(("bind", "pacing"))
        bind = parameters.get("bind", DEFAULT_BIND)
        try:
            _address(bind, local=True)
        except TargetError as error:
            raise TargetError(f"bind: {error}") from None
        return cls(_address(where, local=False), bind, pacing(parameters.get("pacing")))

    @classmethod
    def from_options(cls, udp: str, bind: str | None) -> "UdpTarget":
        """``--udp`` and ``--bind``, each refused by its name."""
        for option, text, local in (("--udp", udp, False), ("--bind", bind or DEFAULT_BIND, True)):
            try:
                _address(text, local)
            except TargetError as error:
                raise TargetError(f"{option}: {error}") from None
        return cls(udp, bind or DEFAULT_BIND)

    @property
    def url(self) -> str:
        return with_query(f"udp://{self.address}", "" if self.bind == DEFAULT_BIND else f"bind={self.bind}",
                          pacing_query(self.realtime))

    def describe(self, scenario: Scenario) -> str:
        return f"a board on udp {self.address}"

    def shared(self) -> str:
        return f"udp {self.address}"

    def connect(self, peer: Peer, scenario: Scenario) -> None:
        from hil.bridges.udp import UdpLink

        peer.link = UdpLink(self.address, self.bind)
