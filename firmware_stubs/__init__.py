"""Emulated flight controllers that CI flies: pure JAX controllers that see only the sensor packet."""
