"""Standard constants: gravity and the ISA (ISO 2533, identical to the 1976 US Standard Atmosphere below 32 km).

NumPy- and JAX-free, so that host-side checks (scenario validation) can use them without starting JAX.
"""

GRAVITY = 9.80665  # m/s^2, standard (constant: hil does not vary gravity with altitude or latitude)
EARTH_RADIUS = 6356766.0  # m, the radius that defines geopotential height in ISO 2533 and the 1976 standard
SEA_LEVEL_PRESSURE = 101325.0  # Pa
SEA_LEVEL_TEMPERATURE = 288.15  # K
SEA_LEVEL_DENSITY = 1.225  # kg/m^3
LAPSE_RATE = 0.0065  # K/m of geopotential height, troposphere
TROPOPAUSE = 11000.0  # m, geopotential
GAS_CONSTANT_AIR = 287.05287  # J/(kg K)
