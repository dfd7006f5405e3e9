/*
 * The C controller (quad_pid.c, the code a board compiles) as an XLA FFI call over a batch of
 * members, so that the compiled tick of a sweep flies the C code itself
 * (hil/firmware_stubs/quad_pid_c.py builds, loads and calls it).
 *
 * Each member's controller state travels in and out as a flat float64 array, so that members
 * share nothing and XLA carries the state like any other: quad_pid_state's fields in their
 * order, ints as exact doubles (STATE_FIELDS in quad_pid_c.py). Its parameters come as a flat
 * array too, quad_pid_params's fields in the order of quad_pid.c's --param table and then `land`,
 * with the mission as (waypoints, 5): N, E, D, yaw (rad), hold (s).
 *
 * Arguments and results carry any leading batch dimensions (JAX's vmap with "broadcast_all"
 * gives every argument the same ones); the call steps every member in turn, each through
 * quad_pid_step exactly as the firmware process steps its one controller.
 */
#include <cstdint>
#include <cstring>
#include <string>

#include "xla/ffi/api/ffi.h"

extern "C" {
#include "quad_pid.h"
}

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kStateSize = 30;    // doubles of a flattened quad_pid_state
constexpr int64_t kParamSize = 52;    // doubles of a flattened quad_pid_params, mission aside, `land` last
constexpr int64_t kReadingSize = 17;  // imu 6, baro 2, mag 3, gps 6
constexpr int64_t kSensors = 4;       // their fresh flags, in that order
constexpr int64_t kWaypointSize = 5;  // N, E, D, yaw, hold

/* Copy `count` doubles from *from to `to` and move *from past them. */
void Take(double *to, int count, const double **from)
{
    std::memcpy(to, *from, sizeof(double) * (size_t)count);
    *from += count;
}

void Put(const double *from, int count, double **to)
{
    std::memcpy(*to, from, sizeof(double) * (size_t)count);
    *to += count;
}

void LoadParams(const double *v, const double *mission, int64_t waypoints, quad_pid_params *p)
{
    quad_pid_params_clear(p);
    Take(&p->imu_period, 1, &v);
    Take(&p->baro_period, 1, &v);
    Take(&p->gps_period, 1, &v);
    Take(&p->mass, 1, &v);
    Take(p->inertia, 3, &v);
    Take(p->mixer, 16, &v);
    Take(&p->thrust_coefficient, 1, &v);
    Take(&p->max_rotor_speed, 1, &v);
    Take(&p->idle_throttle, 1, &v);
    Take(&p->arm_at, 1, &v);
    Take(p->max_speed, 3, &v);
    Take(&p->max_tilt, 1, &v);
    Take(&p->land_speed, 1, &v);
    Take(p->gain_position, 3, &v);
    Take(p->gain_velocity, 3, &v);
    Take(p->gain_velocity_integral, 3, &v);
    Take(p->gain_attitude, 3, &v);
    Take(p->gain_rate, 3, &v);
    Take(p->gain_rate_integral, 3, &v);
    Take(&p->acceptance, 1, &v);
    p->land = *v != 0.0;
    for (int64_t w = 0; w < waypoints; w++) {
        const double *row = mission + w * kWaypointSize;
        std::memcpy(p->waypoints[w], row, 3 * sizeof(double));
        p->waypoint_yaw[w] = row[3];
        p->waypoint_hold[w] = row[4];
    }
    p->waypoint_count = (size_t)waypoints;
}

void LoadState(const double *v, quad_pid_state *s)
{
    Take(s->attitude, 4, &v);
    Take(s->gyro_bias, 3, &v);
    Take(s->position, 3, &v);
    Take(s->velocity, 3, &v);
    Take(&s->baro_reference, 1, &v);
    s->baro_samples = (int)*v++;
    s->gps_ready = (int)*v++;
    Take(s->velocity_integral, 3, &v);
    Take(s->rate_integral, 3, &v);
    s->waypoint = (int)*v++;
    Take(&s->hold, 1, &v);
    s->phase = (int)*v++;
    Take(&s->low_thrust, 1, &v);
    Take(s->command, 4, &v);
}

void StoreState(const quad_pid_state *s, double *v)
{
    Put(s->attitude, 4, &v);
    Put(s->gyro_bias, 3, &v);
    Put(s->position, 3, &v);
    Put(s->velocity, 3, &v);
    Put(&s->baro_reference, 1, &v);
    *v++ = s->baro_samples;
    *v++ = s->gps_ready;
    Put(s->velocity_integral, 3, &v);
    Put(s->rate_integral, 3, &v);
    *v++ = s->waypoint;
    Put(&s->hold, 1, &v);
    *v++ = s->phase;
    Put(&s->low_thrust, 1, &v);
    Put(s->command, 4, &v);
}

/* `buffer` holds `members` rows of `size` doubles. */
bool Holds(const ffi::Buffer<ffi::F64> &buffer, size_t members, int64_t size)
{
    return buffer.element_count() == members * (size_t)size;
}

ffi::Error Invalid(const std::string &message)
{
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "quad_pid_c: " + message);
}

ffi::Error Step(ffi::Buffer<ffi::F64> params, ffi::Buffer<ffi::F64> mission, ffi::Buffer<ffi::F64> state,
                ffi::Buffer<ffi::F64> readings, ffi::Buffer<ffi::F64> fresh, ffi::Buffer<ffi::F64> time,
                ffi::ResultBuffer<ffi::F64> next_state, ffi::ResultBuffer<ffi::F64> throttle)
{
    const size_t members = time.element_count();
    auto waypoint_dims = mission.dimensions();
    if (waypoint_dims.size() < 2 || waypoint_dims.back() != kWaypointSize)
        return Invalid("the mission must be (..., waypoints, 5)");
    const int64_t waypoints = waypoint_dims[waypoint_dims.size() - 2];
    if (waypoints < 1 || waypoints > QUAD_PID_MAX_WAYPOINTS)
        return Invalid("a mission of " + std::to_string(waypoints) + " waypoints; the C controller flies 1 to " +
                       std::to_string(QUAD_PID_MAX_WAYPOINTS));
    if (!Holds(params, members, kParamSize) || !Holds(mission, members, waypoints * kWaypointSize) ||
        !Holds(state, members, kStateSize) || !Holds(readings, members, kReadingSize) ||
        !Holds(fresh, members, kSensors) || !Holds(*next_state, members, kStateSize) ||
        !Holds(*throttle, members, 4))
        return Invalid("the arguments do not describe the same " + std::to_string(members) + " members");

    quad_pid_params p;
    quad_pid_state s;
    quad_pid_readings r;
    quad_pid_fresh f;
    for (size_t m = 0; m < members; m++) {
        LoadParams(params.typed_data() + m * kParamSize, mission.typed_data() + m * waypoints * kWaypointSize,
                   waypoints, &p);
        LoadState(state.typed_data() + m * kStateSize, &s);
        // The active waypoint indexes the mission: refuse a state that does not fit it rather than read past it.
        if (s.waypoint < 0 || s.waypoint >= waypoints)
            return Invalid("member " + std::to_string(m) + "'s state is at waypoint " + std::to_string(s.waypoint) +
                           " of a mission of " + std::to_string(waypoints));
        const double *v = readings.typed_data() + m * kReadingSize;
        Take(r.imu, 6, &v);
        Take(r.baro, 2, &v);
        Take(r.mag, 3, &v);
        Take(r.gps, 6, &v);
        const double *flags = fresh.typed_data() + m * kSensors;
        f.imu = flags[0] != 0.0;
        f.baro = flags[1] != 0.0;
        f.mag = flags[2] != 0.0;
        f.gps = flags[3] != 0.0;
        quad_pid_step(&p, &s, &r, &f, time.typed_data()[m], throttle->typed_data() + m * 4);
        StoreState(&s, next_state->typed_data() + m * kStateSize);
    }
    return ffi::Error::Success();
}

}  // namespace

extern "C" {

/* The sizes quad_pid_c.py must agree with: state, parameters, readings, and the most waypoints. */
void hil_quad_pid_ffi_sizes(int64_t *sizes)
{
    sizes[0] = kStateSize;
    sizes[1] = kParamSize;
    sizes[2] = kReadingSize;
    sizes[3] = QUAD_PID_MAX_WAYPOINTS;
}

}  // extern "C"

XLA_FFI_DEFINE_HANDLER_SYMBOL(HilQuadPidStep, Step,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F64>>()  // parameters (..., 52)
                                  .Arg<ffi::Buffer<ffi::F64>>()  // mission (..., waypoints, 5)
                                  .Arg<ffi::Buffer<ffi::F64>>()  // state (..., 30)
                                  .Arg<ffi::Buffer<ffi::F64>>()  // readings (..., 17)
                                  .Arg<ffi::Buffer<ffi::F64>>()  // fresh flags (..., 4)
                                  .Arg<ffi::Buffer<ffi::F64>>()  // time, s (...)
                                  .Ret<ffi::Buffer<ffi::F64>>()  // the new state (..., 30)
                                  .Ret<ffi::Buffer<ffi::F64>>()); // throttles (..., 4)
