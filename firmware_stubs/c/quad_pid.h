/*
 * quad_pid: C port of hil's emulated quadrotor flight controller (firmware_stubs/quad_pid.py),
 * in double precision with the same constants, phases and arithmetic; or, built with
 * -DQUAD_PID_FLOAT32, in single precision for an FPU that has no double (the STM32F4's Cortex-M4F).
 * Either way readings come in and throttles go out as double, and the parameters stay double.
 *
 * Run quad_pid_step for every tick with the latest reading of each sensor, which of them are
 * new at this tick, and the time (tick / tick rate). The controller updates only when the IMU
 * reading is fresh and otherwise repeats its last command.
 *
 * The controller itself uses only <math.h>; quad_pid_set also uses strcmp and snprintf.
 */
#ifndef QUAD_PID_H
#define QUAD_PID_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef QUAD_PID_MAX_WAYPOINTS
#define QUAD_PID_MAX_WAYPOINTS 64
#endif

enum quad_pid_phase { QUAD_PID_WAITING = 0, QUAD_PID_SPIN_UP = 1, QUAD_PID_MISSION = 2, QUAD_PID_LANDING = 3,
                      QUAD_PID_LANDED = 4 };

#define QUAD_PID_SPIN_UP_TIME 1.0    /* s of idle throttle between arming and the mission */
/* Mahony gains, 1/s. The accelerometer reads mostly the thrust, along the body's z axis however the
   vehicle banks, so its pull towards level is slow, or the estimate of a held bank decays to level. */
#define QUAD_PID_ACCEL_GAIN 0.3
#define QUAD_PID_MAG_GAIN 0.5
#define QUAD_PID_GYRO_BIAS_GAIN 0.05
#define QUAD_PID_BARO_GAIN_POSITION 2.8  /* altitude correction, 1/s */
#define QUAD_PID_BARO_GAIN_VELOCITY 4.0  /* vertical-velocity correction, 1/s^2 */
#define QUAD_PID_GPS_GAIN_POSITION 1.0   /* 1/s */
#define QUAD_PID_GPS_GAIN_VELOCITY 2.0   /* 1/s */
#define QUAD_PID_MAX_YAW_STEP 0.3        /* rad */
#define QUAD_PID_TOUCHDOWN_THRUST 0.4    /* fraction of hover thrust ... */
#define QUAD_PID_TOUCHDOWN_TIME 0.5      /* ... held this long (s) means landed */
#define QUAD_PID_GRAVITY 9.80665         /* m/s^2 */

/* The controller's state and arithmetic: double, or float with QUAD_PID_FLOAT32. Time (the clock,
 * the hold and touchdown timers) is double in both. */
#ifdef QUAD_PID_FLOAT32
typedef float quad_pid_real;
#else
typedef double quad_pid_real;
#endif

/* Every field of QuadPidParams. Vectors are (north, east, down) or (x, y, z); the mixer maps
 * [collective, torque x, y, z] to the 4 rotor thrusts, row-major: mixer[4 * rotor + input]. */
typedef struct quad_pid_params {
    double imu_period, baro_period, gps_period; /* s */
    double mass;                                /* kg */
    double inertia[3];                          /* kg m^2, diagonal */
    double mixer[16];
    double thrust_coefficient;                  /* N / (rad/s)^2 */
    double max_rotor_speed;                     /* rad/s at throttle 1 */
    double idle_throttle;
    double arm_at;                              /* s */
    double max_speed[3];                        /* m/s: north, east (the horizontal limit is [0]), vertical */
    double max_tilt;                            /* rad */
    double land_speed;                          /* m/s, down */
    double gain_position[3], gain_velocity[3], gain_velocity_integral[3];
    double gain_attitude[3], gain_rate[3], gain_rate_integral[3];
    size_t waypoint_count;                      /* at least 1 */
    double waypoints[QUAD_PID_MAX_WAYPOINTS][3];/* m NED */
    double waypoint_yaw[QUAD_PID_MAX_WAYPOINTS];/* rad */
    double waypoint_hold[QUAD_PID_MAX_WAYPOINTS];/* s */
    double acceptance;                          /* m */
    int land;                                   /* land after the last waypoint */
    unsigned long set_mask;                     /* which parameters quad_pid_set_param has set */
} quad_pid_params;

typedef struct quad_pid_state {
    quad_pid_real attitude[4];   /* w, x, y, z: body FRD -> world NED */
    quad_pid_real gyro_bias[3];  /* Mahony integral term, rad/s, added to the gyro */
    quad_pid_real position[3];
    quad_pid_real velocity[3];
    quad_pid_real baro_reference;/* pressure altitude (m) of the take-off point: the mean of baro_samples */
    int baro_samples;            /* baro samples averaged into it: those before arming, at least the first */
    int gps_ready;
    quad_pid_real velocity_integral[3];
    quad_pid_real rate_integral[3];
    int waypoint;                /* index of the active waypoint */
    double hold;                 /* s spent within acceptance of it */
    int phase;                   /* enum quad_pid_phase */
    double low_thrust;           /* s of thrust below the touchdown threshold while landing */
    quad_pid_real command[4];
} quad_pid_state;

/* Latest reading of each sensor (docs/protocol.md section 5). */
typedef struct quad_pid_readings {
    double imu[6];  /* gyro x y z (rad/s), specific force x y z (m/s^2), body FRD */
    double baro[2]; /* pressure (Pa), temperature (K) */
    double mag[3];  /* field x y z (T), body */
    double gps[6];  /* position N E D (m), velocity N E D (m/s) */
} quad_pid_readings;

typedef struct quad_pid_fresh {
    int imu, baro, mag, gps;
} quad_pid_fresh;

void quad_pid_init(const quad_pid_params *params, quad_pid_state *state);

/* One tick: updates *state when fresh->imu, and writes the 4 throttles (0..1, motor order of
 * docs/protocol.md) to throttle. */
void quad_pid_step(const quad_pid_params *params, quad_pid_state *state, const quad_pid_readings *readings,
                   const quad_pid_fresh *fresh, double time, double throttle[4]);

/* Pressure altitude (m) of the International Standard Atmosphere at `pressure` (Pa). */
double quad_pid_pressure_altitude(double pressure);

/* ---- configuration: the parameters hil sends (PARAM) or a command line gives (--param) ----------- */

/* Zero everything. */
void quad_pid_params_clear(quad_pid_params *params);
/* Set parameter `name` to its `count` values: a field of quad_pid_params (vectors flattened, the
 * mixer row-major), "waypoint" (N,E,D,YAW_RAD,HOLD_S: appends one) or "land" (0 or 1), the names
 * hil.firmware_stubs.quad_pid.wire_parameters gives. Returns 1, or 0 with why in err. */
int quad_pid_set(quad_pid_params *params, const char *name, const double *values, size_t count, char *err,
                 size_t err_size);
/* After all arguments: 1 if every parameter is set and there is a waypoint, else 0 with a
 * message naming what is missing. */
int quad_pid_params_complete(const quad_pid_params *params, char *err, size_t err_size);

/* The phase names reported as STATUS: "waiting to arm", "armed, spinning up", "mission started",
 * "landing", "landed, disarmed". */
const char *quad_pid_phase_name(int phase);

#ifdef __cplusplus
}
#endif

#endif /* QUAD_PID_H */
