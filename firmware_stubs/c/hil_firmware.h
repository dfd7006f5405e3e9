/*
 * What main_posix.c and the STM32 board need from an emulated firmware: its identity, the sensors
 * it needs, its parameters and one step per SENSORS message. One implementation is linked into
 * each program: firmware_quad_pid.c (hil_quad_pid), open_loop.c (hil_open_loop). hil_firmware.c
 * holds what any program serving the protocol does with one: the HELLO it sends, the check of
 * hil's, taking its parameters from PARAM messages or from a command line's --param options.
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
    const char *parameter_set;      /* what its HELLO asks hil for (docs/protocol.md, PARAM): "quad_pid" */
    const char *usage;              /* lines describing its parameters, for --help */

    /* Forget every parameter: a new set begins. */
    void (*clear)(void);
    /* Take one parameter (the same names and values over PARAM and --param NAME=V,...). Returns 1,
     * or 0 with why in err (the caller names the parameter). */
    int (*param)(const char *name, const double *values, size_t count, char *err, size_t err_size);
    /* After the last parameter: 1 if the set is complete, else 0 with what is missing. */
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

/* The frames a firmware sends, numbered as docs/protocol.md section 3 says: HELLO carries 0 and
 * leaves the count alone; every other frame takes the next number, from 1, wrapping past 0. */
typedef struct hil_sender {
    uint32_t seq; /* the next frame's number */
    /* Put one complete frame on the link; length 0: it was over a protocol limit (cannot happen
     * with what hil_send_* write) and nothing is to be sent. */
    void (*transmit)(const uint8_t *frame, size_t length);
} hil_sender;

void hil_sender_init(hil_sender *sender, void (*transmit)(const uint8_t *frame, size_t length));
/* The HELLO `fw` answers with; it asks for fw's parameter set when `ask_parameters`. */
void hil_send_hello(hil_sender *sender, const hil_firmware *fw, int ask_parameters);
void hil_send_actuators(hil_sender *sender, uint32_t tick, const double *values, size_t count);
void hil_send_heartbeat(hil_sender *sender, uint32_t tick);
void hil_send_status(hil_sender *sender, uint32_t tick, uint32_t severity, const char *text);
void hil_send_goodbye(hil_sender *sender, uint32_t tick, uint32_t code, const char *reason);
/* 1 when hil's HELLO suits `fw`, its sensors mapped into `layout`; else 0 with the GOODBYE code
 * and the reason to send. */
int hil_firmware_accept(const hil_firmware *fw, const hil_hello *hello, hil_layout *layout, uint32_t *code,
                        char *reason, size_t reason_size);

/* Split "NAME=V[,V...]" (a --param on a command line) into its name (cut to name_size - 1 bytes)
 * and at most HIL_MAX_PARAM_VALUES finite numbers. Returns 1, or 0 with a message. */
int hil_parse_assignment(const char *assignment, char *name, size_t name_size, double *values, size_t *count,
                         char *err, size_t err_size);
/* One "NAME=V[,V...]" given to fw->param. Returns 1, or 0 with a
 * message naming the parameter. */
int hil_firmware_param_text(const hil_firmware *fw, const char *assignment, char *err, size_t err_size);

/* A parameter set being taken from PARAM messages (docs/protocol.md section 6): zero it at each
 * HELLO that asks for parameters. */
typedef struct hil_param_intake {
    uint32_t count; /* parameters in the set being taken; 0 before its first PARAM */
    uint32_t taken; /* how many, in order: the index of the next */
} hil_param_intake;

typedef enum hil_param_event {
    HIL_PARAM_TAKEN = 0,        /* taken (or a resend of the last one taken): acknowledged */
    HIL_PARAM_SET_COMPLETE = 1, /* the last one taken and the set complete: fw->reset() has run, fly */
    HIL_PARAM_DROPPED = 2,      /* out of order: nothing to send (hil sends the one expected again) */
    HIL_PARAM_REFUSED = 3       /* refused with GOODBYE code 5 naming it: end the session */
} hil_param_event;

/* Answer a PARAM (docs/protocol.md section 6): take it into fw (index 0 starts the set over),
 * acknowledge a resend of the last one taken without taking it twice, drop one out of order, or
 * refuse one fw cannot take (or, after the last, a set that is incomplete). Sends the PARAM_ACK or
 * the GOODBYE itself and returns what happened; a refusal's reason is also left in `reason`. */
hil_param_event hil_firmware_answer_param(const hil_firmware *fw, hil_param_intake *intake, const hil_param *param,
                                          hil_sender *sender, char *reason, size_t reason_size);

#endif /* HIL_FIRMWARE_H */
