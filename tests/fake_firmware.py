"""A misbehaving firmware for link tests: speaks the hil protocol over UDP, then fails on purpose.

    python tests/fake_firmware.py --udp HOST:PORT [--version N] [--silent-after TICK]
                                  [--crash-after TICK] [--throttle T]
"""

import argparse
import socket
import sys

from hil import wire


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--udp", required=True)
    parser.add_argument("--version", type=int, default=wire.PROTOCOL_VERSION)
    parser.add_argument("--silent-after", type=int, default=None, help="stop answering SENSORS from this tick on")
    parser.add_argument("--crash-after", type=int, default=None, help="print a last word and exit 7 at this tick")
    parser.add_argument("--throttle", type=float, default=0.0)
    args = parser.parse_args()
    host, port = args.udp.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, int(port)))
    sock.settimeout(10.0)
    seq = 0

    def send(message, peer):
        nonlocal seq
        sock.sendto(wire.encode(message), peer)
        seq += 1

    while True:
        try:
            data, peer = sock.recvfrom(2048)
        except socket.timeout:
            sys.exit(3)
        message = wire.decode(data[:-1])
        if isinstance(message, wire.Hello):
            send(wire.Hello(seq, args.version, "firmware", "quadrotor", 4, 0, (wire.SensorSpec("imu", 6, 0.0),)), peer)
        elif isinstance(message, wire.Sensors):
            if args.crash_after is not None and message.tick >= args.crash_after:
                print(f"fake firmware: giving up at tick {message.tick}", flush=True)
                sys.exit(7)
            if args.silent_after is None or message.tick < args.silent_after:
                send(wire.Actuators(seq, message.tick, (args.throttle,) * 4), peer)
        elif isinstance(message, wire.Goodbye):
            sys.exit(0)


if __name__ == "__main__":
    main()
