/* hil_quad_pid: the quad_pid controller behind main_posix.c's protocol loop. */
#include <stdio.h>
#include <string.h>

#include "hil_firmware.h"
#include "quad_pid.h"

enum { NEED_IMU, NEED_BARO, NEED_MAG, NEED_GPS, NEED_COUNT };

static const hil_sensor_need needs[NEED_COUNT] = {{"imu", 6}, {"baro", 2}, {"mag", 3}, {"gps", 6}};

static quad_pid_params params;
static quad_pid_state state;
static int reported_phase, reported_waypoint;

static void clear(void)
{
    quad_pid_params_clear(&params);
}

static int param(const char *name, const double *values, size_t count, char *err, size_t err_size)
{
    return quad_pid_set(&params, name, values, count, err, err_size);
}

static int finish(char *err, size_t err_size)
{
    return quad_pid_params_complete(&params, err, err_size);
}

static double sensor_rate(size_t need)
{
    double period = need == NEED_IMU ? params.imu_period
                    : need == NEED_BARO ? params.baro_period
                    : need == NEED_GPS ? params.gps_period
                    : 0.0;
    return period > 0.0 ? 1.0 / period : 0.0;
}

static void reset(void)
{
    quad_pid_init(&params, &state);
    reported_phase = state.phase;
    reported_waypoint = state.waypoint;
}

static void step(double *const *readings, const int *fresh, double time, double *out)
{
    quad_pid_readings r;
    quad_pid_fresh f;
    memcpy(r.imu, readings[NEED_IMU], sizeof r.imu);
    memcpy(r.baro, readings[NEED_BARO], sizeof r.baro);
    memcpy(r.mag, readings[NEED_MAG], sizeof r.mag);
    memcpy(r.gps, readings[NEED_GPS], sizeof r.gps);
    f.imu = fresh[NEED_IMU];
    f.baro = fresh[NEED_BARO];
    f.mag = fresh[NEED_MAG];
    f.gps = fresh[NEED_GPS];
    quad_pid_step(&params, &state, &r, &f, time, out);
}

static int report(char *text, size_t text_size, uint32_t *severity)
{
    *severity = HIL_INFO;
    if (state.phase != reported_phase) {
        reported_phase = state.phase;
        snprintf(text, text_size, "%s", quad_pid_phase_name(state.phase));
        return 1;
    }
    if (state.waypoint != reported_waypoint) {
        reported_waypoint = state.waypoint;
        snprintf(text, text_size, "waypoint %d of %lu", state.waypoint + 1, (unsigned long)params.waypoint_count);
        return 1;
    }
    return 0;
}

const hil_firmware hil_firmware_this = {
    "hil_quad_pid",
    "quadrotor",
    4,
    needs,
    NEED_COUNT,
    "quad_pid",
    "  --param NAME=V[,V...]          a controller parameter: every field of QuadPidParams but the\n"
    "                                 mission (vectors flattened, the mixer 16 values row-major);\n"
    "                                 waypoint=N,E,D,YAW_RAD,HOLD_S (m NED, rad, s) once per waypoint\n"
    "                                 in mission order; land=1 to land and disarm after the last\n",
    clear,
    param,
    finish,
    sensor_rate,
    reset,
    step,
    report,
};
