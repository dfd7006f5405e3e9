/*
 * quad_pid: C port of firmware_stubs/quad_pid.py. Each function below mirrors the Python one
 * of the same name, expression by expression and in the same order of operations, so that the
 * two agree to rounding. jnp.where becomes a branch (both sides are computed in JAX, but only
 * the selected one is kept); jnp.select takes the first true condition; jnp.minimum/maximum and
 * jnp.clip propagate NaN as JAX does.
 */
#include "quad_pid.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ISA constants (hil.models.environment). */
#define SEA_LEVEL_PRESSURE 101325.0
#define SEA_LEVEL_TEMPERATURE 288.15
#define LAPSE_RATE 0.0065
#define GAS_CONSTANT_AIR 287.05287

static const double EXPONENT = QUAD_PID_GRAVITY / (GAS_CONSTANT_AIR * LAPSE_RATE);

/* ---- elementwise helpers with JAX semantics ----------------------------------------------------- */

static double jmax(double a, double b)
{
    if (a != a || b != b) return a + b; /* NaN in, NaN out */
    return a > b ? a : b;
}

static double jmin(double a, double b)
{
    if (a != a || b != b) return a + b;
    return a < b ? a : b;
}

static double jclip(double x, double lo, double hi)
{
    return jmin(jmax(x, lo), hi);
}

static double norm3(const double v[3])
{
    return sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
}

static void cross(const double a[3], const double b[3], double out[3])
{
    double r0 = a[1] * b[2] - a[2] * b[1];
    double r1 = a[2] * b[0] - a[0] * b[2];
    double r2 = a[0] * b[1] - a[1] * b[0];
    out[0] = r0;
    out[1] = r1;
    out[2] = r2;
}

/* out = m @ v */
static void matvec(double m[3][3], const double v[3], double out[3])
{
    int i;
    double r[3];
    for (i = 0; i < 3; i++) r[i] = m[i][0] * v[0] + m[i][1] * v[1] + m[i][2] * v[2];
    memcpy(out, r, sizeof r);
}

/* out = m.T @ v */
static void matvec_t(double m[3][3], const double v[3], double out[3])
{
    int i;
    double r[3];
    for (i = 0; i < 3; i++) r[i] = m[0][i] * v[0] + m[1][i] * v[1] + m[2][i] * v[2];
    memcpy(out, r, sizeof r);
}

/* ---- hil.models.quaternion ------------------------------------------------------------------------ */

static void quat_multiply(const double a[4], const double b[4], double out[4])
{
    double aw = a[0], ax = a[1], ay = a[2], az = a[3];
    double bw = b[0], bx = b[1], by = b[2], bz = b[3];
    out[0] = aw * bw - ax * bx - ay * by - az * bz;
    out[1] = aw * bx + ax * bw + ay * bz - az * by;
    out[2] = aw * by - ax * bz + ay * bw + az * bx;
    out[3] = aw * bz + ax * by - ay * bx + az * bw;
}

static void quat_to_matrix(const double q[4], double r[3][3])
{
    double w = q[0], x = q[1], y = q[2], z = q[3];
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
static void quat_integrate(const double q[4], const double rate[3], double dt, double out[4])
{
    double angle = norm3(rate) * dt;
    double half = 0.5 * angle;
    double scale = (angle > 1e-12 ? sin(half) / angle : 0.5) * dt;
    double delta[4], product[4], n;
    int k;
    delta[0] = cos(half);
    delta[1] = rate[0] * scale;
    delta[2] = rate[1] * scale;
    delta[3] = rate[2] * scale;
    quat_multiply(q, delta, product);
    n = sqrt(product[0] * product[0] + product[1] * product[1] + product[2] * product[2] + product[3] * product[3]);
    for (k = 0; k < 4; k++) out[k] = product[k] / n;
}

double quad_pid_pressure_altitude(double pressure)
{
    return SEA_LEVEL_TEMPERATURE / LAPSE_RATE * (1.0 - pow(pressure / SEA_LEVEL_PRESSURE, 1.0 / EXPONENT));
}

/* ---- the controller ------------------------------------------------------------------------------ */

void quad_pid_init(const quad_pid_params *params, quad_pid_state *state)
{
    (void)params;
    memset(state, 0, sizeof *state);
    state->attitude[0] = 1.0;
    state->phase = QUAD_PID_WAITING;
}

/* Mahony filter: the new attitude, gyro-bias integral and corrected body rate. */
static void estimate_attitude(const quad_pid_params *p, const quad_pid_state *s, const double gyro[3],
                              const double accel[3], const double mag[3], double attitude[4], double gyro_bias[3],
                              double rate[3])
{
    static const double down_up[3] = {0.0, 0.0, -1.0};
    double rotation[3][3], up_predicted[3], field_world[3], heading_correction[3], unit[3], tilt[3];
    double error[3], corrected[3], norm, trust, denominator, heading_error, heading_vector[3];
    int k;
    quat_to_matrix(s->attitude, rotation);
    matvec_t(rotation, down_up, up_predicted);
    norm = norm3(accel);
    /* The accelerometer only tells tilt when it reads about 1 g; trust fades out by 0.5 g off. */
    trust = jclip(1.0 - fabs(norm - QUAD_PID_GRAVITY) / (0.5 * QUAD_PID_GRAVITY), 0.0, 1.0);
    denominator = jmax(norm, 1e-6);
    for (k = 0; k < 3; k++) unit[k] = accel[k] / denominator;
    cross(unit, up_predicted, tilt);
    for (k = 0; k < 3; k++) tilt[k] = trust * tilt[k];
    matvec(rotation, mag, field_world);
    heading_error = atan2(field_world[1], field_world[0]);
    heading_vector[0] = 0.0;
    heading_vector[1] = 0.0;
    heading_vector[2] = -heading_error;
    matvec_t(rotation, heading_vector, heading_correction);
    for (k = 0; k < 3; k++) {
        error[k] = QUAD_PID_ACCEL_GAIN * tilt[k] + QUAD_PID_MAG_GAIN * heading_correction[k];
        gyro_bias[k] = s->gyro_bias[k] + QUAD_PID_GYRO_BIAS_GAIN * error[k] * p->imu_period;
        rate[k] = gyro[k] + gyro_bias[k];
        corrected[k] = rate[k] + error[k];
    }
    quat_integrate(s->attitude, corrected, p->imu_period, attitude);
}

/* Accelerometer prediction corrected by barometric altitude and GPS. */
static void estimate_position(const quad_pid_params *p, const quad_pid_state *s, const double attitude[4],
                              const double accel[3], const quad_pid_readings *readings, const quad_pid_fresh *fresh,
                              double position[3], double velocity[3], double *reference, int *baro_ready,
                              int *gps_ready)
{
    static const double gps_weight[3] = {1.0, 1.0, 0.3};
    double rotation[3][3], acceleration[3], altitude, baro_error, dt = p->imu_period;
    const double *gps = readings->gps;
    int k;
    quat_to_matrix(attitude, rotation);
    matvec(rotation, accel, acceleration);
    acceleration[0] += 0.0;
    acceleration[1] += 0.0;
    acceleration[2] += QUAD_PID_GRAVITY;
    for (k = 0; k < 3; k++) {
        position[k] = s->position[k] + s->velocity[k] * dt + 0.5 * acceleration[k] * (dt * dt);
        velocity[k] = s->velocity[k] + acceleration[k] * dt;
    }

    altitude = quad_pid_pressure_altitude(readings->baro[0]);
    *reference = s->baro_ready ? s->baro_reference : altitude;
    baro_error = fresh->baro ? -(altitude - *reference) - position[2] : 0.0;
    position[2] = position[2] + QUAD_PID_BARO_GAIN_POSITION * p->baro_period * baro_error;
    velocity[2] = velocity[2] + QUAD_PID_BARO_GAIN_VELOCITY * p->baro_period * baro_error;

    if (fresh->gps && !s->gps_ready) { /* first fix: take the GPS position and horizontal velocity */
        position[0] = gps[0];
        position[1] = gps[1];
        velocity[0] = gps[3];
        velocity[1] = gps[4];
    } else if (fresh->gps) {
        for (k = 0; k < 2; k++)
            position[k] = position[k] + QUAD_PID_GPS_GAIN_POSITION * p->gps_period * (gps[k] - position[k]);
        for (k = 0; k < 3; k++)
            velocity[k] = velocity[k] + QUAD_PID_GPS_GAIN_VELOCITY * p->gps_period * (gps[3 + k] - velocity[k]) *
                                            gps_weight[k];
    }
    *baro_ready = s->baro_ready || fresh->baro;
    *gps_ready = s->gps_ready || fresh->gps;
}

/* Rotation whose body -z axis points along thrust_world with the given heading. */
static void attitude_from_thrust(const double thrust_world[3], double yaw, double out[3][3])
{
    double n = norm3(thrust_world), z_axis[3], heading[3], y_axis[3], x_axis[3], m;
    int k;
    for (k = 0; k < 3; k++) z_axis[k] = -thrust_world[k] / n;
    heading[0] = cos(yaw);
    heading[1] = sin(yaw);
    heading[2] = 0.0;
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

static void update(const quad_pid_params *p, const quad_pid_state *s, const quad_pid_readings *readings,
                   const quad_pid_fresh *fresh, double time, quad_pid_state *out)
{
    const double dt = p->imu_period;
    const double *gyro = readings->imu, *accel = readings->imu + 3;
    const double *target;
    double attitude[4], gyro_bias[3], rate[3], position[3], velocity[3], reference;
    double difference[3], hold, velocity_setpoint[3], horizontal, factor, velocity_error[3];
    double velocity_integral[3], acceleration[3], thrust[3], allowed, rotation[3][3], collective;
    double heading, yaw, turn, desired[3][3], mismatch[3][3], attitude_error[3], rate_setpoint[3];
    double rate_error[3], rate_integral[3], torque[3], wrench[4], throttle[4], low_thrust;
    int baro_ready, gps_ready, last, flying, within, done_here, waypoint, mission_over, phase, i, j, k;

    estimate_attitude(p, s, gyro, accel, readings->mag, attitude, gyro_bias, rate);
    estimate_position(p, s, attitude, accel, readings, fresh, position, velocity, &reference, &baro_ready, &gps_ready);

    /* Mission: arm, spin up, fly the waypoints, optionally land. */
    last = (int)p->waypoint_count - 1;
    target = p->waypoints[s->waypoint];
    flying = s->phase == QUAD_PID_MISSION || s->phase == QUAD_PID_LANDING;
    for (k = 0; k < 3; k++) difference[k] = position[k] - target[k];
    within = norm3(difference) < p->acceptance;
    hold = within && s->phase == QUAD_PID_MISSION ? s->hold + dt : 0.0;
    done_here = hold >= p->waypoint_hold[s->waypoint];
    waypoint = done_here && s->waypoint < last ? s->waypoint + 1 : s->waypoint;
    if (waypoint != s->waypoint) hold = 0.0;
    mission_over = done_here && s->waypoint == last;
    if (s->phase == QUAD_PID_LANDED) phase = QUAD_PID_LANDED;
    else if (s->phase == QUAD_PID_MISSION && mission_over && p->land) phase = QUAD_PID_LANDING;
    else if (s->phase >= QUAD_PID_MISSION) phase = s->phase;
    else if (time >= p->arm_at + QUAD_PID_SPIN_UP_TIME) phase = QUAD_PID_MISSION;
    else if (time >= p->arm_at) phase = QUAD_PID_SPIN_UP;
    else phase = QUAD_PID_WAITING;

    /* Position -> velocity setpoint, limited per axis group. */
    for (k = 0; k < 3; k++) velocity_setpoint[k] = p->gain_position[k] * (target[k] - position[k]);
    horizontal = sqrt(velocity_setpoint[0] * velocity_setpoint[0] + velocity_setpoint[1] * velocity_setpoint[1]);
    factor = jmin(1.0, p->max_speed[0] / jmax(horizontal, 1e-9));
    velocity_setpoint[0] = velocity_setpoint[0] * factor;
    velocity_setpoint[1] = velocity_setpoint[1] * factor;
    velocity_setpoint[2] = jclip(velocity_setpoint[2], -p->max_speed[2], p->max_speed[2]);
    if (phase == QUAD_PID_LANDING) velocity_setpoint[2] = p->land_speed;

    /* Velocity PI -> acceleration -> thrust vector with a tilt limit. */
    for (k = 0; k < 3; k++) {
        velocity_error[k] = velocity_setpoint[k] - velocity[k];
        velocity_integral[k] = flying ? jclip(s->velocity_integral[k] + velocity_error[k] * dt, -4.0, 4.0) : 0.0;
        acceleration[k] = p->gain_velocity[k] * velocity_error[k] + p->gain_velocity_integral[k] * velocity_integral[k];
    }
    thrust[0] = p->mass * (acceleration[0] - 0.0);
    thrust[1] = p->mass * (acceleration[1] - 0.0);
    thrust[2] = p->mass * (acceleration[2] - QUAD_PID_GRAVITY);
    thrust[2] = jmin(thrust[2], -0.1 * p->mass * QUAD_PID_GRAVITY);
    horizontal = sqrt(thrust[0] * thrust[0] + thrust[1] * thrust[1]);
    allowed = -thrust[2] * tan(p->max_tilt);
    factor = jmin(1.0, allowed / jmax(horizontal, 1e-9));
    thrust[0] = thrust[0] * factor;
    thrust[1] = thrust[1] * factor;

    quat_to_matrix(attitude, rotation);
    collective = jmax(thrust[0] * -rotation[0][2] + thrust[1] * -rotation[1][2] + thrust[2] * -rotation[2][2], 0.0);
    /* Turn at most MAX_YAW_STEP ahead of the current heading, so a large heading change never
     * pulls the geometric attitude error (and so the tilt) off the thrust direction. */
    heading = atan2(rotation[1][0], rotation[0][0]);
    yaw = p->waypoint_yaw[waypoint];
    turn = atan2(sin(yaw - heading), cos(yaw - heading));
    attitude_from_thrust(thrust, heading + jclip(turn, -QUAD_PID_MAX_YAW_STEP, QUAD_PID_MAX_YAW_STEP), desired);
    for (i = 0; i < 3; i++) {
        for (j = 0; j < 3; j++) {
            double a = desired[0][i] * rotation[0][j] + desired[1][i] * rotation[1][j] + desired[2][i] * rotation[2][j];
            double b = rotation[0][i] * desired[0][j] + rotation[1][i] * desired[1][j] + rotation[2][i] * desired[2][j];
            mismatch[i][j] = a - b;
        }
    }
    attitude_error[0] = 0.5 * mismatch[2][1];
    attitude_error[1] = 0.5 * mismatch[0][2];
    attitude_error[2] = 0.5 * mismatch[1][0];
    for (k = 0; k < 3; k++) {
        rate_setpoint[k] = -p->gain_attitude[k] * attitude_error[k];
        rate_error[k] = rate_setpoint[k] - rate[k];
        rate_integral[k] = flying ? jclip(s->rate_integral[k] + rate_error[k] * dt, -1.0, 1.0) : 0.0;
        torque[k] = p->inertia[k] * (p->gain_rate[k] * rate_error[k] + p->gain_rate_integral[k] * rate_integral[k]);
    }

    wrench[0] = collective;
    wrench[1] = torque[0];
    wrench[2] = torque[1];
    wrench[3] = torque[2];
    for (i = 0; i < 4; i++) {
        const double *row = &p->mixer[4 * i];
        double rotor_thrust = jmax(row[0] * wrench[0] + row[1] * wrench[1] + row[2] * wrench[2] + row[3] * wrench[3],
                                   0.0);
        throttle[i] = jclip(sqrt(rotor_thrust / p->thrust_coefficient) / p->max_rotor_speed, p->idle_throttle, 1.0);
    }

    low_thrust = phase == QUAD_PID_LANDING && collective < QUAD_PID_TOUCHDOWN_THRUST * p->mass * QUAD_PID_GRAVITY
                     ? s->low_thrust + dt
                     : 0.0;
    if (low_thrust >= QUAD_PID_TOUCHDOWN_TIME) phase = QUAD_PID_LANDED;

    memcpy(out->attitude, attitude, sizeof attitude);
    memcpy(out->gyro_bias, gyro_bias, sizeof gyro_bias);
    memcpy(out->position, position, sizeof position);
    memcpy(out->velocity, velocity, sizeof velocity);
    out->baro_reference = reference;
    out->baro_ready = baro_ready;
    out->gps_ready = gps_ready;
    memcpy(out->velocity_integral, velocity_integral, sizeof velocity_integral);
    memcpy(out->rate_integral, rate_integral, sizeof rate_integral);
    out->waypoint = waypoint;
    out->hold = hold;
    out->phase = phase;
    out->low_thrust = low_thrust;
    for (i = 0; i < 4; i++) {
        if (phase == QUAD_PID_WAITING || phase == QUAD_PID_LANDED) out->command[i] = 0.0;
        else if (phase == QUAD_PID_SPIN_UP) out->command[i] = p->idle_throttle;
        else out->command[i] = throttle[i];
    }
}

void quad_pid_step(const quad_pid_params *params, quad_pid_state *state, const quad_pid_readings *readings,
                   const quad_pid_fresh *fresh, double time, double throttle[4])
{
    if (fresh->imu && params->waypoint_count > 0) {
        quad_pid_state next;
        update(params, state, readings, fresh, time, &next);
        *state = next;
    }
    memcpy(throttle, state->command, 4 * sizeof(double));
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

/* Parse up to `max` comma-separated numbers; returns how many, or -1 with a message. */
static int parse_numbers(const char *text, double *out, size_t max, const char *what, char *err, size_t err_size)
{
    size_t n = 0;
    const char *p = text;
    for (;;) {
        char *end;
        double v;
        if (*p == '\0' || *p == ',') {
            snprintf(err, err_size, "%s: empty number in '%s'", what, text);
            return -1;
        }
        errno = 0;
        v = strtod(p, &end);
        if (end == p || (*end != ',' && *end != '\0')) {
            snprintf(err, err_size, "%s: '%s' is not a list of numbers", what, text);
            return -1;
        }
        if (errno == ERANGE && (v == HUGE_VAL || v == -HUGE_VAL)) {
            snprintf(err, err_size, "%s: a number in '%s' is out of range", what, text);
            return -1;
        }
        if (n == max) {
            snprintf(err, err_size, "%s: more than %lu numbers in '%s'", what, (unsigned long)max, text);
            return -1;
        }
        out[n++] = v;
        if (*end == '\0') break;
        p = end + 1;
    }
    return (int)n;
}

int quad_pid_set_param(quad_pid_params *params, const char *assignment, char *err, size_t err_size)
{
    const char *equals = strchr(assignment, '=');
    size_t name_len, k;
    double values[16];
    int n;
    if (equals == NULL) {
        snprintf(err, err_size, "--param '%s': expected NAME=V[,V...]", assignment);
        return 0;
    }
    name_len = (size_t)(equals - assignment);
    for (k = 0; k < FIELD_COUNT; k++) {
        if (strlen(fields[k].name) == name_len && strncmp(fields[k].name, assignment, name_len) == 0) break;
    }
    if (k == FIELD_COUNT) {
        snprintf(err, err_size, "--param: unknown parameter '%.*s'", (int)name_len, assignment);
        return 0;
    }
    n = parse_numbers(equals + 1, values, 16, fields[k].name, err, err_size);
    if (n < 0) return 0;
    if ((size_t)n != fields[k].count) {
        snprintf(err, err_size, "--param %s: expected %lu value%s, got %d", fields[k].name,
                 (unsigned long)fields[k].count, fields[k].count == 1 ? "" : "s", n);
        return 0;
    }
    memcpy((char *)params + fields[k].offset, values, fields[k].count * sizeof(double));
    params->set_mask |= 1ul << k;
    return 1;
}

int quad_pid_add_waypoint(quad_pid_params *params, const char *spec, char *err, size_t err_size)
{
    double v[5];
    size_t w = params->waypoint_count;
    int n = parse_numbers(spec, v, 5, "--waypoint", err, err_size);
    if (n < 0) return 0;
    if (n != 5) {
        snprintf(err, err_size, "--waypoint '%s': expected N,E,D,YAW_RAD,HOLD_S", spec);
        return 0;
    }
    if (w >= QUAD_PID_MAX_WAYPOINTS) {
        snprintf(err, err_size, "--waypoint: at most %d waypoints", QUAD_PID_MAX_WAYPOINTS);
        return 0;
    }
    params->waypoints[w][0] = v[0];
    params->waypoints[w][1] = v[1];
    params->waypoints[w][2] = v[2];
    params->waypoint_yaw[w] = v[3];
    params->waypoint_hold[w] = v[4];
    params->waypoint_count = w + 1;
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
        snprintf(err, err_size, "at least one --waypoint N,E,D,YAW_RAD,HOLD_S is needed");
        return 0;
    }
    return 1;
}
