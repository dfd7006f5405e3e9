"""hil: a flight-software hardware-in-the-loop harness."""

__version__ = "0.1.0"
