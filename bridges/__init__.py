"""Links to a flight controller: UDP, serial, and adapters to other autopilots' protocols."""
