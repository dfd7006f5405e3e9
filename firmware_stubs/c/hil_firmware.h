/*
 * What main_posix.c needs from an emulated firmware: its identity, the sensors it needs, its
 * command-line options and one step per SENSORS message. One implementation is linked into
 * each program: firmware_quad_pid.c (hil_quad_pid), open_loop.c (hil_open_loop). hil_firmware.c
 * holds what any program serving the protocol does with one (the HELLO it sends, the check of
 * hil's).
 */
#ifndef HIL_FIRMWARE_H
#define HIL_FIRMWARE_H

#include <stddef.h>
#include <stdint.h>

#include "hil_proto.h"

typedef struct hil_firmware {
    const char *program;            /* "hil_quad_pid" */
    const char *vehicle;            /* "quadrotor" */
    uint32_t actuators;             /* values in every ACTUATORS */
    const hil_sensor_need *needs;   /* the sensors it lists in its HELLO */
    size_t need_count;
    const char *usage;              /* lines describing its own options, for --help */

    /* -1: not an option of this firmware; 0: a flag; 1: takes a value. */
    int (*option_arity)(const char *option);
    /* Apply an option (value NULL for a flag). Returns 1, or 0 with a message in err. */
    int (*option)(const char *option, const char *value, char *err, size_t err_size);
    /* After all options: 1 if the configuration is complete, else 0 with a message. */
    int (*finish)(char *err, size_t err_size);
    /* The rate (Hz) of need n it expects, 0.0 when unknown: goes into the HELLO. */
    double (*sensor_rate)(size_t need);
    /* Start a session: initial state, readings zero. */
    void (*reset)(void);
    /* One tick: readings[n] is the latest reading of need n, fresh[n] whether it is new at this
     * tick; writes `actuators` values to out. */
    void (*step)(double *const *readings, const int *fresh, double time, double *out);
    /* After a step: 1 and a STATUS text (severity in *severity) when there is news to report,
     * else 0. Called until it returns 0. */
    int (*report)(char *text, size_t text_size, uint32_t *severity);
} hil_firmware;

extern const hil_firmware hil_firmware_this;

/* The HELLO `fw` answers with (seq 0, which does not advance a sender's counter: docs/protocol.md section 3). */
void hil_firmware_hello(const hil_firmware *fw, hil_hello *hello);
/* 1 when hil's HELLO suits `fw`, its sensors mapped into `layout`; else 0 with the GOODBYE code
 * and the reason to send. */
int hil_firmware_accept(const hil_firmware *fw, const hil_hello *hello, hil_layout *layout, uint32_t *code,
                        char *reason, size_t reason_size);

#endif /* HIL_FIRMWARE_H */
