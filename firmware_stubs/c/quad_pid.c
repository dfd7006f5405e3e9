/*
 * quad_pid: C port of firmware_stubs/quad_pid.py. Each function below mirrors the Python one
 * of the same name, expression by expression and in the same order of operations, so that the
 * two agree to rounding. jnp.where becomes a branch (both sides are computed in JAX, but only
 * the selected one is kept); jnp.select takes the first true condition; jnp.minimum/maximum and
 * jnp.clip propagate NaN as JAX does.
 *
 * The arithmetic is in quad_pid_real (quad_pid.h): double by default, float with
 * QUAD_PID_FLOAT32 for an FPU that does single precision only. Every constant and every
 * parameter enters it through R(), a cast that costs nothing in the double build and keeps the
 * float build from promoting to double (it compiles clean with -Wdouble-promotion).
 */
#include "quad_pid.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef quad_pid_real real;
#define R(x) ((real)(x))

#ifdef QUAD_PID_FLOAT32
#define SQRT sqrtf
#define SIN sinf
#define COS cosf
#define TAN tanf
#define ATAN2 atan2f
#define FABS fabsf
#else
#define SQRT sqrt
#define SIN sin
#define COS cos
#define TAN tan
#define ATAN2 atan2
#define FABS fabs
#endif

/* ISA constants (hil.models.environment). */
#define SEA_LEVEL_PRESSURE 101325.0
#define SEA_LEVEL_TEMPERATURE 288.15
#define LAPSE_RATE 0.0065
#define GAS_CONSTANT_AIR 287.05287
#define EXPONENT (QUAD_PID_GRAVITY / (GAS_CONSTANT_AIR * LAPSE_RATE))

/* The latest readings in the controller's arithmetic: quad_pid_readings itself in the double
 * build, converted once a step in the float build. */
#ifdef QUAD_PID_FLOAT32
typedef struct sensed {
    real imu[6], baro[2], mag[3], gps[6];
} sensed;

static void convert(const double *in, size_t n, real *out)
{
    size_t k;
    for (k = 0; k < n; k++) out[k] = R(in[k]);
}

static const sensed *sense(const quad_pid_readings *readings, sensed *out)
{
    convert(readings->imu, 6, out->imu);
    convert(readings->baro, 2, out->baro);
    convert(readings->mag, 3, out->mag);
    convert(readings->gps, 6, out->gps);
    return out;
}
#else
typedef quad_pid_readings sensed;

static const sensed *sense(const quad_pid_readings *readings, sensed *out)
{
    (void)out;
    return readings;
}
#endif

/* ---- elementwise helpers with JAX semantics ----------------------------------------------------- */

static real jmax(real a, real b)
{
    if (a != a || b != b) return a + b; /* NaN in, NaN out */
    return a > b ? a : b;
}

static real jmin(real a, real b)
{
    if (a != a || b != b) return a + b;
    return a < b ? a : b;
}

static real jclip(real x, real lo, real hi)
{
    return jmin(jmax(x, lo), hi);
}

static real norm3(const real v[3])
{
    return SQRT(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
}

static void cross(const real a[3], const real b[3], real out[3])
{
    real r0 = a[1] * b[2] - a[2] * b[1];
    real r1 = a[2] * b[0] - a[0] * b[2];
    real r2 = a[0] * b[1] - a[1] * b[0];
    out[0] = r0;
    out[1] = r1;
    out[2] = r2;
}

/* out = m @ v */
static void matvec(real m[3][3], const real v[3], real out[3])
{
    int i;
    real r[3];
    for (i = 0; i < 3; i++) r[i] = m[i][0] * v[0] + m[i][1] * v[1] + m[i][2] * v[2];
    memcpy(out, r, sizeof r);
}

/* out = m.T @ v */
static void matvec_t(real m[3][3], const real v[3], real out[3])
{
    int i;
    real r[3];
    for (i = 0; i < 3; i++) r[i] = m[0][i] * v[0] + m[1][i] * v[1] + m[2][i] * v[2];
    memcpy(out, r, sizeof r);
}

/* ---- hil.models.quaternion ------------------------------------------------------------------------ */

static void quat_multiply(const real a[4], const real b[4], real out[4])
{
    real aw = a[0], ax = a[1], ay = a[2], az = a[3];
    real bw = b[0], bx = b[1], by = b[2], bz = b[3];
    out[0] = aw * bw - ax * bx - ay * by - az * bz;
    out[1] = aw * bx + ax * bw + ay * bz - az * by;
    out[2] = aw * by - ax * bz + ay * bw + az * bx;
    out[3] = aw * bz + ax * by - ay * bx + az * bw;
}

static void quat_to_matrix(const real q[4], real r[3][3])
{
    real w = q[0], x = q[1], y = q[2], z = q[3];
    r[0][0] = 1 - 2 * (y * y + z * z);
    r[0][1] = 2 * (x * y - w * z);
    r[0][2] = 2 * (x * z + w * y);
    r[1][0] = 2 * (x * y + w * z);
    r[1][1] = 1 - 2 * (x * x + z * z);
    r[1][2] = 2 * (y * z - w * x);
    r[2][0] = 2 * (x * z - w * y);
    r[2][1] = 2 * (y * z + w * x);
    r[2][2] = 1 - 2 * (x * x + y * y);
}

/* Rotate q by a constant body rate over dt (exact exponential map), renormalised. */
static void quat_integrate(const real q[4], const real rate[3], real dt, real out[4])
{
    real angle = norm3(rate) * dt;
    real half = R(0.5) * angle;
    real scale = (angle > R(1e-12) ? SIN(half) / angle : R(0.5)) * dt;
    real delta[4], product[4], n;
    int k;
    delta[0] = COS(half);
    delta[1] = rate[0] * scale;
    delta[2] = rate[1] * scale;
    delta[3] = rate[2] * scale;
    quat_multiply(q, delta, product);
    n = SQRT(product[0] * product[0] + product[1] * product[1] + product[2] * product[2] + product[3] * product[3]);
    for (k = 0; k < 4; k++) out[k] = product[k] / n;
}

/* In double, as hil.models.environment writes it. In float, 1 - (p/p0)^(1/EXPONENT) would cancel
 * away all but a few bits near sea level (one float step of the power is 2.6 mm of altitude), so
 * the float build takes the same function through log1p and expm1, which keep them. */
static real pressure_altitude(real pressure)
{
#ifdef QUAD_PID_FLOAT32
    return R(-SEA_LEVEL_TEMPERATURE / LAPSE_RATE) *
           expm1f(log1pf((pressure - R(SEA_LEVEL_PRESSURE)) / R(SEA_LEVEL_PRESSURE)) * R(1.0 / EXPONENT));
#else
    return SEA_LEVEL_TEMPERATURE / LAPSE_RATE * (1.0 - pow(pressure / SEA_LEVEL_PRESSURE, 1.0 / EXPONENT));
#endif
}

double quad_pid_pressure_altitude(double pressure)
{
    return (double)pressure_altitude(R(pressure));
}

/* ---- the controller ------------------------------------------------------------------------------ */

void quad_pid_init(const quad_pid_params *params, quad_pid_state *state)
{
    (void)params;
    memset(state, 0, sizeof *state);
    state->attitude[0] = 1;
    state->phase = QUAD_PID_WAITING;
}

/* Mahony filter: the new attitude, gyro-bias integral and corrected body rate. */
static void estimate_attitude(const quad_pid_params *p, const quad_pid_state *s, const real gyro[3],
                              const real accel[3], const real mag[3], real attitude[4], real gyro_bias[3],
                              real rate[3])
{
    static const real down_up[3] = {0, 0, -1};
    real rotation[3][3], up_predicted[3], field_world[3], heading_correction[3], unit[3], tilt[3];
    real error[3], corrected[3], norm, trust, denominator, heading_error, heading_vector[3];
    int k;
    quat_to_matrix(s->attitude, rotation);
    matvec_t(rotation, down_up, up_predicted);
    norm = norm3(accel);
    /* The accelerometer only tells tilt when it reads about 1 g; trust fades out by 0.5 g off. */
    trust = jclip(1 - FABS(norm - R(QUAD_PID_GRAVITY)) / R(0.5 * QUAD_PID_GRAVITY), 0, 1);
    denominator = jmax(norm, R(1e-6));
    for (k = 0; k < 3; k++) unit[k] = accel[k] / denominator;
    cross(unit, up_predicted, tilt);
    for (k = 0; k < 3; k++) tilt[k] = trust * tilt[k];
    matvec(rotation, mag, field_world);
    heading_error = ATAN2(field_world[1], field_world[0]);
    heading_vector[0] = 0;
    heading_vector[1] = 0;
    heading_vector[2] = -heading_error;
    matvec_t(rotation, heading_vector, heading_correction);
    for (k = 0; k < 3; k++) {
        error[k] = R(QUAD_PID_ACCEL_GAIN) * tilt[k] + R(QUAD_PID_MAG_GAIN) * heading_correction[k];
        gyro_bias[k] = s->gyro_bias[k] + R(QUAD_PID_GYRO_BIAS_GAIN) * error[k] * R(p->imu_period);
        rate[k] = gyro[k] + gyro_bias[k];
        corrected[k] = rate[k] + error[k];
    }
    quat_integrate(s->attitude, corrected, R(p->imu_period), attitude);
}

/* Accelerometer prediction corrected by barometric altitude and GPS. */
static void estimate_position(const quad_pid_params *p, const quad_pid_state *s, const real attitude[4],
                              const real accel[3], const sensed *readings, const quad_pid_fresh *fresh,
                              real position[3], real velocity[3], real *reference, int *baro_samples, int *gps_ready)
{
    static const real gps_weight[3] = {1, 1, R(0.3)};
    real rotation[3][3], acceleration[3], altitude, baro_error, dt = R(p->imu_period);
    int averaged;
    const real *gps = readings->gps;
    int k;
    quat_to_matrix(attitude, rotation);
    matvec(rotation, accel, acceleration);
    acceleration[0] += 0;
    acceleration[1] += 0;
    acceleration[2] += R(QUAD_PID_GRAVITY);
    for (k = 0; k < 3; k++) {
        position[k] = s->position[k] + s->velocity[k] * dt + R(0.5) * acceleration[k] * (dt * dt);
        velocity[k] = s->velocity[k] + acceleration[k] * dt;
    }

    altitude = pressure_altitude(readings->baro[0]);
    /* The barometer's zero: the mean of its samples on the ground before arming (at least the first). */
    averaged = fresh->baro && (s->baro_samples == 0 || s->phase == QUAD_PID_WAITING);
    *baro_samples = averaged ? s->baro_samples + 1 : s->baro_samples;
    *reference = averaged ? s->baro_reference + (altitude - s->baro_reference) / (real)*baro_samples : s->baro_reference;
    baro_error = fresh->baro ? -(altitude - *reference) - position[2] : 0;
    position[2] = position[2] + R(QUAD_PID_BARO_GAIN_POSITION) * R(p->baro_period) * baro_error;
    velocity[2] = velocity[2] + R(QUAD_PID_BARO_GAIN_VELOCITY) * R(p->baro_period) * baro_error;

    if (fresh->gps && !s->gps_ready) { /* first fix: take the GPS position and horizontal velocity */
        position[0] = gps[0];
        position[1] = gps[1];
        velocity[0] = gps[3];
        velocity[1] = gps[4];
    } else if (fresh->gps) {
        for (k = 0; k < 2; k++)
            position[k] = position[k] + R(QUAD_PID_GPS_GAIN_POSITION) * R(p->gps_period) * (gps[k] - position[k]);
        for (k = 0; k < 3; k++)
            velocity[k] = velocity[k] + R(QUAD_PID_GPS_GAIN_VELOCITY) * R(p->gps_period) * (gps[3 + k] - velocity[k]) *
                                            gps_weight[k];
    }
    *gps_ready = s->gps_ready || fresh->gps;
}

/* Rotation whose body -z axis points along thrust_world with the given heading. */
static void attitude_from_thrust(const real thrust_world[3], real yaw, real out[3][3])
{
    real n = norm3(thrust_world), z_axis[3], heading[3], y_axis[3], x_axis[3], m;
    int k;
    for (k = 0; k < 3; k++) z_axis[k] = -thrust_world[k] / n;
    heading[0] = COS(yaw);
    heading[1] = SIN(yaw);
    heading[2] = 0;
    cross(z_axis, heading, y_axis);
    m = norm3(y_axis);
    for (k = 0; k < 3; k++) y_axis[k] = y_axis[k] / m;
    cross(y_axis, z_axis, x_axis);
    for (k = 0; k < 3; k++) {
        out[k][0] = x_axis[k];
        out[k][1] = y_axis[k];
        out[k][2] = z_axis[k];
    }
}

static void update(const quad_pid_params *p, const quad_pid_state *s, const sensed *readings,
                   const quad_pid_fresh *fresh, double time, quad_pid_state *out)
{
    const real dt = R(p->imu_period);
    const real *gyro = readings->imu, *accel = readings->imu + 3;
    real target[3];
    real attitude[4], gyro_bias[3], rate[3], position[3], velocity[3], reference;
    real difference[3], velocity_setpoint[3], horizontal, factor, velocity_error[3];
    real velocity_integral[3], acceleration[3], thrust[3], allowed, rotation[3][3], collective;
    real heading, yaw, turn, desired[3][3], mismatch[3][3], attitude_error[3], rate_setpoint[3];
    real rate_error[3], rate_integral[3], torque[3], wrench[4], throttle[4];
    double hold, low_thrust;
    int baro_samples, gps_ready, last, flying, within, done_here, waypoint, mission_over, phase, i, j, k;

    estimate_attitude(p, s, gyro, accel, readings->mag, attitude, gyro_bias, rate);
    estimate_position(p, s, attitude, accel, readings, fresh, position, velocity, &reference, &baro_samples, &gps_ready);

    /* Mission: arm, spin up, fly the waypoints, optionally land. */
    last = (int)p->waypoint_count - 1;
    for (k = 0; k < 3; k++) target[k] = R(p->waypoints[s->waypoint][k]);
    flying = s->phase == QUAD_PID_MISSION || s->phase == QUAD_PID_LANDING;
    for (k = 0; k < 3; k++) difference[k] = position[k] - target[k];
    within = norm3(difference) < R(p->acceptance);
    hold = within && s->phase == QUAD_PID_MISSION ? s->hold + p->imu_period : 0.0;
    done_here = hold >= p->waypoint_hold[s->waypoint];
    waypoint = done_here && s->waypoint < last ? s->waypoint + 1 : s->waypoint;
    if (waypoint != s->waypoint) hold = 0.0;
    mission_over = done_here && s->waypoint == last;
    /* Time stays in double in both builds, the clock and the timers (hold, low_thrust): a tick
     * lands exactly on arm_at, and a float sum of 1000 steps of 1 ms falls short of 1 s, which
     * would move a waypoint's end, or arming, by a tick. */
    if (s->phase == QUAD_PID_LANDED) phase = QUAD_PID_LANDED;
    else if (s->phase == QUAD_PID_MISSION && mission_over && p->land) phase = QUAD_PID_LANDING;
    else if (s->phase >= QUAD_PID_MISSION) phase = s->phase;
    else if (time >= p->arm_at + QUAD_PID_SPIN_UP_TIME) phase = QUAD_PID_MISSION;
    else if (time >= p->arm_at) phase = QUAD_PID_SPIN_UP;
    else phase = QUAD_PID_WAITING;

    /* Position -> velocity setpoint, limited per axis group. */
    for (k = 0; k < 3; k++) velocity_setpoint[k] = R(p->gain_position[k]) * (target[k] - position[k]);
    horizontal = SQRT(velocity_setpoint[0] * velocity_setpoint[0] + velocity_setpoint[1] * velocity_setpoint[1]);
    factor = jmin(1, R(p->max_speed[0]) / jmax(horizontal, R(1e-9)));
    velocity_setpoint[0] = velocity_setpoint[0] * factor;
    velocity_setpoint[1] = velocity_setpoint[1] * factor;
    velocity_setpoint[2] = jclip(velocity_setpoint[2], -R(p->max_speed[2]), R(p->max_speed[2]));
    if (phase == QUAD_PID_LANDING) velocity_setpoint[2] = R(p->land_speed);

    /* Velocity PI -> acceleration -> thrust vector with a tilt limit. */
    for (k = 0; k < 3; k++) {
        velocity_error[k] = velocity_setpoint[k] - velocity[k];
        velocity_integral[k] = flying ? jclip(s->velocity_integral[k] + velocity_error[k] * dt, -4, 4) : 0;
        acceleration[k] =
            R(p->gain_velocity[k]) * velocity_error[k] + R(p->gain_velocity_integral[k]) * velocity_integral[k];
    }
    thrust[0] = R(p->mass) * (acceleration[0] - 0);
    thrust[1] = R(p->mass) * (acceleration[1] - 0);
    thrust[2] = R(p->mass) * (acceleration[2] - R(QUAD_PID_GRAVITY));
    thrust[2] = jmin(thrust[2], R(-0.1) * R(p->mass) * R(QUAD_PID_GRAVITY));
    horizontal = SQRT(thrust[0] * thrust[0] + thrust[1] * thrust[1]);
    allowed = -thrust[2] * TAN(R(p->max_tilt));
    factor = jmin(1, allowed / jmax(horizontal, R(1e-9)));
    thrust[0] = thrust[0] * factor;
    thrust[1] = thrust[1] * factor;

    quat_to_matrix(attitude, rotation);
    collective = jmax(thrust[0] * -rotation[0][2] + thrust[1] * -rotation[1][2] + thrust[2] * -rotation[2][2], 0);
    /* Turn at most MAX_YAW_STEP ahead of the current heading, so a large heading change never
     * pulls the geometric attitude error (and so the tilt) off the thrust direction. */
    heading = ATAN2(rotation[1][0], rotation[0][0]);
    yaw = R(p->waypoint_yaw[waypoint]);
    turn = ATAN2(SIN(yaw - heading), COS(yaw - heading));
    attitude_from_thrust(thrust, heading + jclip(turn, R(-QUAD_PID_MAX_YAW_STEP), R(QUAD_PID_MAX_YAW_STEP)),
                         desired);
    for (i = 0; i < 3; i++) {
        for (j = 0; j < 3; j++) {
            real a = desired[0][i] * rotation[0][j] + desired[1][i] * rotation[1][j] + desired[2][i] * rotation[2][j];
            real b = rotation[0][i] * desired[0][j] + rotation[1][i] * desired[1][j] + rotation[2][i] * desired[2][j];
            mismatch[i][j] = a - b;
        }
    }
    attitude_error[0] = R(0.5) * mismatch[2][1];
    attitude_error[1] = R(0.5) * mismatch[0][2];
    attitude_error[2] = R(0.5) * mismatch[1][0];
    for (k = 0; k < 3; k++) {
        rate_setpoint[k] = -R(p->gain_attitude[k]) * attitude_error[k];
        rate_error[k] = rate_setpoint[k] - rate[k];
        rate_integral[k] = flying ? jclip(s->rate_integral[k] + rate_error[k] * dt, -1, 1) : 0;
        torque[k] = R(p->inertia[k]) *
                    (R(p->gain_rate[k]) * rate_error[k] + R(p->gain_rate_integral[k]) * rate_integral[k]);
    }

    wrench[0] = collective;
    wrench[1] = torque[0];
    wrench[2] = torque[1];
    wrench[3] = torque[2];
    for (i = 0; i < 4; i++) {
        const double *row = &p->mixer[4 * i];
        real rotor_thrust =
            jmax(R(row[0]) * wrench[0] + R(row[1]) * wrench[1] + R(row[2]) * wrench[2] + R(row[3]) * wrench[3], 0);
        throttle[i] = jclip(SQRT(rotor_thrust / R(p->thrust_coefficient)) / R(p->max_rotor_speed),
                            R(p->idle_throttle), 1);
    }

    low_thrust = phase == QUAD_PID_LANDING &&
                         collective < R(QUAD_PID_TOUCHDOWN_THRUST) * R(p->mass) * R(QUAD_PID_GRAVITY)
                     ? s->low_thrust + p->imu_period
                     : 0.0;
    if (low_thrust >= QUAD_PID_TOUCHDOWN_TIME) phase = QUAD_PID_LANDED;

    memcpy(out->attitude, attitude, sizeof attitude);
    memcpy(out->gyro_bias, gyro_bias, sizeof gyro_bias);
    memcpy(out->position, position, sizeof position);
    memcpy(out->velocity, velocity, sizeof velocity);
    out->baro_reference = reference;
    out->baro_samples = baro_samples;
    out->gps_ready = gps_ready;
    memcpy(out->velocity_integral, velocity_integral, sizeof velocity_integral);
    memcpy(out->rate_integral, rate_integral, sizeof rate_integral);
    out->waypoint = waypoint;
    out->hold = hold;
    out->phase = phase;
    out->low_thrust = low_thrust;
    for (i = 0; i < 4; i++) {
        if (phase == QUAD_PID_WAITING || phase == QUAD_PID_LANDED) out->command[i] = 0;
        else if (phase == QUAD_PID_SPIN_UP) out->command[i] = R(p->idle_throttle);
        else out->command[i] = throttle[i];
    }
}

void quad_pid_step(const quad_pid_params *params, quad_pid_state *state, const quad_pid_readings *readings,
                   const quad_pid_fresh *fresh, double time, double throttle[4])
{
    int k;
    if (fresh->imu && params->waypoint_count > 0) {
        quad_pid_state next;
        sensed converted;
        update(params, state, sense(readings, &converted), fresh, time, &next);
        *state = next;
    }
    for (k = 0; k < 4; k++) throttle[k] = (double)state->command[k];
}

const char *quad_pid_phase_name(int phase)
{
    static const char *const names[] = {"waiting to arm", "armed, spinning up", "mission started", "landing",
                                        "landed, disarmed"};
    return phase >= 0 && phase <= QUAD_PID_LANDED ? names[phase] : "unknown phase";
}

/* ---- configuration -------------------------------------------------------------------------------- */

typedef struct param_field {
    const char *name;
    size_t offset;
    size_t count;
} param_field;

#define FIELD(name, count) {#name, offsetof(quad_pid_params, name), count}

static const param_field fields[] = {
    FIELD(imu_period, 1), FIELD(baro_period, 1), FIELD(gps_period, 1), FIELD(mass, 1), FIELD(inertia, 3),
    FIELD(mixer, 16), FIELD(thrust_coefficient, 1), FIELD(max_rotor_speed, 1), FIELD(idle_throttle, 1),
    FIELD(arm_at, 1), FIELD(max_speed, 3), FIELD(max_tilt, 1), FIELD(land_speed, 1), FIELD(gain_position, 3),
    FIELD(gain_velocity, 3), FIELD(gain_velocity_integral, 3), FIELD(gain_attitude, 3), FIELD(gain_rate, 3),
    FIELD(gain_rate_integral, 3), FIELD(acceptance, 1),
};
#define FIELD_COUNT (sizeof fields / sizeof fields[0])

void quad_pid_params_clear(quad_pid_params *params)
{
    memset(params, 0, sizeof *params);
}

/* The mission, as parameters: one "waypoint" per waypoint in order, and "land" (0 or 1). */
static int set_mission(quad_pid_params *params, const char *name, const double *values, size_t count, char *err,
                       size_t err_size)
{
    size_t w = params->waypoint_count;
    if (strcmp(name, "land") == 0) {
        if (count != 1 || (values[0] != 0.0 && values[0] != 1.0)) {
            snprintf(err, err_size, "expected one value, 0 or 1");
            return 0;
        }
        params->land = values[0] == 1.0;
        return 1;
    }
    if (count != 5) {
        snprintf(err, err_size, "expected 5 values (N,E,D,YAW_RAD,HOLD_S), got %lu", (unsigned long)count);
        return 0;
    }
    if (w >= QUAD_PID_MAX_WAYPOINTS) {
        snprintf(err, err_size, "at most %d waypoints", QUAD_PID_MAX_WAYPOINTS);
        return 0;
    }
    if (!(values[4] >= 0.0)) {
        snprintf(err, err_size, "the hold time must be 0 s or more, got %g", values[4]);
        return 0;
    }
    params->waypoints[w][0] = values[0];
    params->waypoints[w][1] = values[1];
    params->waypoints[w][2] = values[2];
    params->waypoint_yaw[w] = values[3];
    params->waypoint_hold[w] = values[4];
    params->waypoint_count = w + 1;
    return 1;
}

int quad_pid_set(quad_pid_params *params, const char *name, const double *values, size_t count, char *err,
                 size_t err_size)
{
    size_t k, i;
    for (i = 0; i < count; i++) {
        if (values[i] - values[i] != 0.0) { /* NaN or infinite */
            snprintf(err, err_size, "value %lu is not finite", (unsigned long)i);
            return 0;
        }
    }
    if (strcmp(name, "waypoint") == 0 || strcmp(name, "land") == 0)
        return set_mission(params, name, values, count, err, err_size);
    for (k = 0; k < FIELD_COUNT; k++)
        if (strcmp(fields[k].name, name) == 0) break;
    if (k == FIELD_COUNT) {
        snprintf(err, err_size, "unknown parameter");
        return 0;
    }
    if (count != fields[k].count) {
        snprintf(err, err_size, "expected %lu value%s, got %lu", (unsigned long)fields[k].count,
                 fields[k].count == 1 ? "" : "s", (unsigned long)count);
        return 0;
    }
    memcpy((char *)params + fields[k].offset, values, count * sizeof(double));
    params->set_mask |= 1ul << k;
    return 1;
}

int quad_pid_params_complete(const quad_pid_params *params, char *err, size_t err_size)
{
    size_t k, used = 0;
    int missing = 0;
    if (err_size > 0) err[0] = '\0';
    for (k = 0; k < FIELD_COUNT; k++) {
        if (params->set_mask & (1ul << k)) continue;
        if (!missing) {
            int w = snprintf(err, err_size, "missing parameters: %s", fields[k].name);
            used = w < 0 ? 0 : (size_t)w;
        } else if (used < err_size) {
            int w = snprintf(err + used, err_size - used, ", %s", fields[k].name);
            used += w < 0 ? 0 : (size_t)w;
        }
        missing = 1;
    }
    if (missing) return 0;
    if (params->waypoint_count == 0) {
        snprintf(err, err_size, "no waypoint: give at least one (waypoint=N,E,D,YAW_RAD,HOLD_S)");
        return 0;
    }
    return 1;
}
