/* hil_open_loop: constant motor throttles (firmware_stubs/open_loop.py), behind main_posix.c. */
#include <stdio.h>
#include <string.h>

#include "hil_firmware.h"

static double throttle[4];
static int throttle_set;

static void clear(void)
{
    throttle_set = 0;
}

static int param(const char *name, const double *values, size_t count, char *err, size_t err_size)
{
    if (strcmp(name, "throttle") != 0) {
        snprintf(err, err_size, "unknown parameter: open_loop takes only throttle=T0,T1,T2,T3");
        return 0;
    }
    if (count != 4) {
        snprintf(err, err_size, "expected 4 values, got %lu", (unsigned long)count);
        return 0;
    }
    memcpy(throttle, values, sizeof throttle);
    throttle_set = 1;
    return 1;
}

static int finish(char *err, size_t err_size)
{
    if (throttle_set) return 1;
    snprintf(err, err_size, "missing parameters: throttle");
    return 0;
}

static double sensor_rate(size_t need)
{
    (void)need;
    return 0.0;
}

static void reset(void)
{
}

static void step(double *const *readings, const int *fresh, double time, double *out)
{
    (void)readings;
    (void)fresh;
    (void)time;
    memcpy(out, throttle, sizeof throttle);
}

static int report(char *text, size_t text_size, uint32_t *severity)
{
    (void)text;
    (void)text_size;
    (void)severity;
    return 0;
}

const hil_firmware hil_firmware_this = {
    "hil_open_loop",
    "quadrotor",
    4,
    NULL,
    0,
    "open_loop",
    "  --param throttle=T0,T1,T2,T3   the constant motor throttles (0..1)\n",
    clear,
    param,
    finish,
    sensor_rate,
    reset,
    step,
    report,
};
