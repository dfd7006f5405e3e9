/* hil_open_loop: constant motor throttles (firmware_stubs/open_loop.py), behind main_posix.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hil_firmware.h"

static double throttle[4];
static int throttle_set;

static int option_arity(const char *option)
{
    if (strcmp(option, "--param") == 0 || strcmp(option, "--waypoint") == 0) return 1;
    if (strcmp(option, "--land") == 0) return 0;
    return -1;
}

static int option(const char *option, const char *value, char *err, size_t err_size)
{
    const char *p;
    int n = 0;
    if (strcmp(option, "--param") != 0) return 1; /* a mission means nothing here: ignored */
    if (strncmp(value, "throttle=", 9) != 0) {
        snprintf(err, err_size, "--param '%s': open_loop takes only throttle=T0,T1,T2,T3", value);
        return 0;
    }
    p = value + 9;
    for (;;) {
        char *end;
        double v;
        errno = 0;
        v = strtod(p, &end);
        if (end == p || (*end != ',' && *end != '\0') || n == 4 || errno == ERANGE) break;
        throttle[n++] = v;
        if (*end == '\0') {
            if (n != 4) break;
            throttle_set = 1;
            return 1;
        }
        p = end + 1;
    }
    snprintf(err, err_size, "--param '%s': expected throttle=T0,T1,T2,T3", value);
    return 0;
}

static int finish(char *err, size_t err_size)
{
    if (throttle_set) return 1;
    snprintf(err, err_size, "open_loop needs --param throttle=T0,T1,T2,T3");
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
    "  --param throttle=T0,T1,T2,T3   the constant motor throttles (0..1)\n",
    option_arity,
    option,
    finish,
    sensor_rate,
    reset,
    step,
    report,
};
