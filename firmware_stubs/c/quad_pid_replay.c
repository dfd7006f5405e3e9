/*
 * quad_pid_replay: run the C controller over recorded sensor readings, for comparison with
 * firmware_stubs/quad_pid.py. The arguments are the controller's parameters, --param NAME=V[,V...]
 * each (hil.firmware_stubs.quad_pid.command_line);
 * stdin has one tick per line:
 *
 *   time fresh_imu fresh_baro fresh_mag fresh_gps imu*6 baro*2 mag*3 gps*6
 *
 * with the flags as 0/1 and every number a 16-hex-digit IEEE double. Each tick prints
 *
 *   phase waypoint command*4 position*3 velocity*3 attitude*4
 *
 * (phase and waypoint in decimal, the rest as hex doubles). The readings of a sensor that is
 * not fresh are ignored: the controller keeps the latest fresh ones, as main_posix.c does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hil_firmware.h"
#include "quad_pid.h"

static double parse_bits(const char *token, int *ok)
{
    char *end;
    unsigned long long bits = strtoull(token, &end, 16);
    double v;
    if (end == token || *end != '\0') *ok = 0;
    memcpy(&v, &bits, sizeof v);
    return v;
}

static void print_bits(double v)
{
    unsigned long long bits;
    memcpy(&bits, &v, sizeof bits);
    printf(" %016llx", bits);
}

int main(int argc, char **argv)
{
    static quad_pid_params params;
    static char line[4096];
    quad_pid_state state;
    quad_pid_readings readings;
    char err[512];
    int i;

    quad_pid_params_clear(&params);
    for (i = 1; i < argc; i++) {
        int ok = 1;
        if (strcmp(argv[i], "--param") == 0 && i + 1 < argc) {
            char name[HIL_MAX_TEXT + 1], why[160];
            double values[HIL_MAX_PARAM_VALUES];
            size_t count;
            ok = hil_parse_assignment(argv[++i], name, sizeof name, values, &count, err, sizeof err);
            if (ok && !quad_pid_set(&params, name, values, count, why, sizeof why)) {
                snprintf(err, sizeof err, "parameter %s: %s", name, why);
                ok = 0;
            }
        } else {
            snprintf(err, sizeof err, "unexpected argument '%s'", argv[i]);
            ok = 0;
        }
        if (!ok) {
            fprintf(stderr, "quad_pid_replay: %s\n", err);
            return 2;
        }
    }
    if (!quad_pid_params_complete(&params, err, sizeof err)) {
        fprintf(stderr, "quad_pid_replay: %s\n", err);
        return 2;
    }
    quad_pid_init(&params, &state);
    memset(&readings, 0, sizeof readings);

    while (fgets(line, sizeof line, stdin) != NULL) {
        double values[1 + 17], throttle[4], time;
        int flags[4], count = 0, ok = 1, k;
        quad_pid_fresh fresh;
        char *token = strtok(line, " \n");
        while (token != NULL && count < 22) {
            if (count >= 1 && count <= 4) flags[count - 1] = atoi(token);
            else values[count < 1 ? 0 : count - 4] = parse_bits(token, &ok);
            count++;
            token = strtok(NULL, " \n");
        }
        if (count != 22 || token != NULL || !ok) {
            fprintf(stderr, "quad_pid_replay: bad line\n");
            return 1;
        }
        time = values[0];
        fresh.imu = flags[0];
        fresh.baro = flags[1];
        fresh.mag = flags[2];
        fresh.gps = flags[3];
        if (fresh.imu) memcpy(readings.imu, &values[1], sizeof readings.imu);
        if (fresh.baro) memcpy(readings.baro, &values[7], sizeof readings.baro);
        if (fresh.mag) memcpy(readings.mag, &values[9], sizeof readings.mag);
        if (fresh.gps) memcpy(readings.gps, &values[12], sizeof readings.gps);
        quad_pid_step(&params, &state, &readings, &fresh, time, throttle);
        printf("%d %d", state.phase, state.waypoint);
        for (k = 0; k < 4; k++) print_bits(throttle[k]);
        for (k = 0; k < 3; k++) print_bits(state.position[k]);
        for (k = 0; k < 3; k++) print_bits(state.velocity[k]);
        for (k = 0; k < 4; k++) print_bits(state.attitude[k]);
        fputc('\n', stdout);
    }
    return 0;
}
