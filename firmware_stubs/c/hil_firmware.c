/*
 * The part of a firmware's side of the protocol that does not depend on where it runs: the
 * HELLO it sends, whether hil's HELLO suits it, and taking its parameters. main_posix.c (a
 * process on UDP or a serial port) and board/board_main.c (a bare STM32F405 on its UART) both
 * serve the protocol with it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hil_firmware.h"

void hil_sender_init(hil_sender *sender, void (*transmit)(const uint8_t *frame, size_t length))
{
    sender->seq = 1; /* 0 belongs to HELLO */
    sender->transmit = transmit;
}

/* Transmit one frame written with the sender's number; a numbered one advances the count. */
static void emit(hil_sender *sender, const uint8_t *frame, size_t length, int numbered)
{
    sender->transmit(frame, length);
    if (length > 0 && numbered) sender->seq = sender->seq == UINT32_MAX ? 1u : sender->seq + 1u;
}

void hil_send_hello(hil_sender *sender, const hil_firmware *fw, int ask_parameters)
{
    static hil_hello hello; /* some 3.5 KB: not on a board's stack */
    uint8_t frame[HIL_FRAME_BUFFER];
    size_t k;
    memset(&hello, 0, sizeof hello);
    if (ask_parameters) hil_str_set(&hello.params, fw->parameter_set);
    hello.version = HIL_PROTOCOL_VERSION;
    hil_str_set(&hello.role, "firmware");
    hil_str_set(&hello.vehicle, fw->vehicle);
    hello.actuators = fw->actuators;
    hello.tick_rate_hz = 0; /* any */
    hello.sensor_count = (uint32_t)fw->need_count;
    for (k = 0; k < fw->need_count; k++) {
        hil_str_set(&hello.sensors[k].name, fw->needs[k].name);
        hello.sensors[k].fields = fw->needs[k].fields;
        hello.sensors[k].rate_hz = fw->sensor_rate(k);
    }
    emit(sender, frame, hil_encode_hello(frame, sizeof frame, 0, &hello), 0);
}

void hil_send_actuators(hil_sender *sender, uint32_t tick, const double *values, size_t count)
{
    uint8_t frame[HIL_FRAME_BUFFER];
    emit(sender, frame, hil_encode_actuators(frame, sizeof frame, sender->seq, tick, values, count), 1);
}

void hil_send_heartbeat(hil_sender *sender, uint32_t tick)
{
    uint8_t frame[HIL_FRAME_BUFFER];
    emit(sender, frame, hil_encode_heartbeat(frame, sizeof frame, sender->seq, tick), 1);
}

void hil_send_status(hil_sender *sender, uint32_t tick, uint32_t severity, const char *text)
{
    uint8_t frame[HIL_FRAME_BUFFER];
    emit(sender, frame, hil_encode_status(frame, sizeof frame, sender->seq, tick, severity, text), 1);
}

void hil_send_goodbye(hil_sender *sender, uint32_t tick, uint32_t code, const char *reason)
{
    uint8_t frame[HIL_FRAME_BUFFER];
    emit(sender, frame, hil_encode_goodbye(frame, sizeof frame, sender->seq, tick, code, reason), 1);
}

int hil_firmware_accept(const hil_firmware *fw, const hil_hello *hello, hil_layout *layout, uint32_t *code,
                        char *reason, size_t reason_size)
{
    size_t which = 0;
    hil_layout_result mapped;

    *code = HIL_GOODBYE_LAYOUT_MISMATCH;
    if (hello->version != HIL_PROTOCOL_VERSION) {
        snprintf(reason, reason_size, "protocol version: hil speaks %lu, firmware %u", (unsigned long)hello->version,
                 HIL_PROTOCOL_VERSION);
        *code = HIL_GOODBYE_VERSION_MISMATCH;
        return 0;
    }
    if (!hil_str_equals(&hello->vehicle, fw->vehicle)) {
        snprintf(reason, reason_size, "vehicle: hil flies '%.*s', firmware '%s'", 80, hello->vehicle.text,
                 fw->vehicle);
        return 0;
    }
    if (hello->actuators != fw->actuators) {
        snprintf(reason, reason_size, "actuators: hil has %lu, firmware sends %lu", (unsigned long)hello->actuators,
                 (unsigned long)fw->actuators);
        return 0;
    }
    if (hello->tick_rate_hz == 0) {
        snprintf(reason, reason_size, "tick rate: hil sent 0 Hz; the firmware needs it to tell the time");
        return 0;
    }
    mapped = hil_layout_map(layout, hello, fw->needs, fw->need_count, &which);
    if (mapped == HIL_LAYOUT_MISSING) {
        snprintf(reason, reason_size, "sensor %s: the firmware needs it, hil's HELLO does not have it",
                 fw->needs[which].name);
        return 0;
    }
    if (mapped != HIL_LAYOUT_OK) {
        uint32_t k, fields = 0;
        for (k = 0; k < hello->sensor_count; k++)
            if (hil_str_equals(&hello->sensors[k].name, fw->needs[which].name)) fields = hello->sensors[k].fields;
        snprintf(reason, reason_size, "sensor %s: hil sends %lu fields, firmware expects %lu", fw->needs[which].name,
                 (unsigned long)fields, (unsigned long)fw->needs[which].fields);
        return 0;
    }
    return 1;
}

int hil_parse_assignment(const char *assignment, char *name, size_t name_size, double *values, size_t *count,
                         char *err, size_t err_size)
{
    const char *equals = strchr(assignment, '='), *p;
    size_t name_len, n = 0;
    if (equals == NULL || equals == assignment) {
        snprintf(err, err_size, "--param '%.120s': expected NAME=V[,V...]", assignment);
        return 0;
    }
    name_len = (size_t)(equals - assignment);
    if (name_len >= name_size) name_len = name_size - 1;
    memcpy(name, assignment, name_len);
    name[name_len] = '\0';
    for (p = equals + 1;; p++) {
        char *end;
        if (n == HIL_MAX_PARAM_VALUES) {
            snprintf(err, err_size, "parameter %.60s: more than %u values", name, HIL_MAX_PARAM_VALUES);
            return 0;
        }
        errno = 0;
        values[n] = strtod(p, &end);
        if (end == p || (*end != ',' && *end != '\0') || (errno == ERANGE && values[n] != 0.0) ||
            values[n] - values[n] != 0.0) {
            snprintf(err, err_size, "parameter %.60s: '%.80s' is not a list of finite numbers", name, equals + 1);
            return 0;
        }
        n++;
        p = end;
        if (*p == '\0') break;
    }
    *count = n;
    return 1;
}

int hil_firmware_param_text(const hil_firmware *fw, const char *assignment, char *err, size_t err_size)
{
    char name[HIL_MAX_TEXT + 1], why[160];
    double values[HIL_MAX_PARAM_VALUES];
    size_t count;
    if (!hil_parse_assignment(assignment, name, sizeof name, values, &count, err, err_size)) return 0;
    if (!fw->param(name, values, count, why, sizeof why)) {
        snprintf(err, err_size, "parameter %.60s: %s", name, why);
        return 0;
    }
    return 1;
}

/* 1 and the parameter taken, or 0 with why in reason. */
static int take(const hil_firmware *fw, hil_param_intake *intake, const hil_param *param, char *reason,
                size_t reason_size)
{
    char why[160];
    if (!fw->param(param->name.text, param->values, param->value_count, why, sizeof why)) {
        snprintf(reason, reason_size, "parameter %.60s: %s", param->name.text, why);
        return 0;
    }
    intake->taken++;
    if (intake->taken == intake->count && !fw->finish(why, sizeof why)) {
        snprintf(reason, reason_size, "parameters: %s", why);
        return 0;
    }
    return 1;
}

hil_param_event hil_firmware_answer_param(const hil_firmware *fw, hil_param_intake *intake, const hil_param *param,
                                          hil_sender *sender, char *reason, size_t reason_size)
{
    uint8_t frame[HIL_FRAME_BUFFER];
    hil_param_event event = HIL_PARAM_TAKEN;
    if (param->index == 0) { /* the set starts (over) */
        fw->clear();
        intake->count = param->count;
        intake->taken = 0;
    } else if (param->count != intake->count) {
        return HIL_PARAM_DROPPED;
    }
    if (param->index + 1 != intake->taken) { /* not a resend of the last one taken, whose ACK was lost */
        if (param->index != intake->taken) return HIL_PARAM_DROPPED;
        if (!take(fw, intake, param, reason, reason_size)) {
            intake->count = 0;
            hil_send_goodbye(sender, 0, HIL_GOODBYE_PARAMETER, reason);
            return HIL_PARAM_REFUSED;
        }
        if (intake->taken == intake->count) {
            fw->reset();
            event = HIL_PARAM_SET_COMPLETE;
        }
    }
    emit(sender, frame, hil_encode_param_ack(frame, sizeof frame, sender->seq, param->index), 1);
    return event;
}
