/*
 * The flight controller's main loop on a bare STM32F405: hil's native protocol (docs/protocol.md)
 * on USART1, served as main_posix.c serves it, with the firmware main_posix.c links
 * (firmware_quad_pid.c: the quad_pid controller).
 *
 * It answers every HELLO with its own, replies to every SENSORS with ACTUATORS for the same tick,
 * reports the controller's news as STATUS and sends a HEARTBEAT after 0.2 s of silence. A board
 * does not exit: a HELLO it cannot work with is refused with GOODBYE, and after hil's GOODBYE the
 * motors stop and it waits for the next HELLO. It has no console, so frames dropped on the line
 * are reported to hil as a STATUS warning after the next ACTUATORS, with the counters so far.
 *
 * One image serves every scenario: its HELLO asks hil for the controller's parameters, which come
 * in PARAM messages before tick 0 (docs/protocol.md section 6), as a board with settings in flash
 * would be configured. A parameter it cannot take is refused with GOODBYE, naming it.
 */
#include <stdio.h>
#include <string.h>

#include "board.h"
#include "hil_firmware.h"
#include "hil_proto.h"

#define BAUD 921600u
#define HEARTBEAT_MS 200u /* of silence before a HEARTBEAT, as main_posix.c */

static const hil_firmware *fw = &hil_firmware_this;

static struct {
    hil_sender sender;
    int have_last_seq;
    uint32_t last_seq;     /* hil's previous frame */
    int accepted;          /* a HELLO has been accepted and no GOODBYE has come since */
    int active;            /* ... and its parameters taken: SENSORS are answered */
    hil_param_intake intake;
    hil_layout layout;
    uint32_t tick_rate_hz;
    uint32_t latest_tick;
    uint32_t last_sent;    /* board_millis() of our last frame */
    double readings[HIL_MAX_SENSORS][HIL_MAX_VALUES];
    double *reading_ptr[HIL_MAX_SENSORS];
    int fresh[HIL_MAX_SENSORS];
    double motors[HIL_MAX_VALUES]; /* the throttles in force: what a board drives its ESCs with */
    uint32_t reported_drops;       /* frames dropped plus bytes overrun, as last reported */
} session;

static hil_reader reader;

static void transmit(const uint8_t *frame, size_t length)
{
    if (length == 0) return; /* over a protocol limit: cannot happen with what this program sends */
    usart_write(frame, length);
    session.last_sent = board_millis();
}

static void stop_motors(void)
{
    memset(session.motors, 0, sizeof session.motors);
}

/* The session ends, from either side: motors off, wait for the next HELLO. */
static void end_session(void)
{
    session.accepted = 0;
    session.active = 0;
    stop_motors();
}

static void refuse(uint32_t code, const char *reason)
{
    hil_send_goodbye(&session.sender, 0, code, reason);
    end_session();
}

static void on_hello(const hil_hello *hello)
{
    char reason[HIL_MAX_TEXT + 1];
    uint32_t code;

    hil_send_hello(&session.sender, fw, 1); /* answer every HELLO, so that a lost one only costs a retry */
    if (!hil_firmware_accept(fw, hello, &session.layout, &code, reason, sizeof reason)) {
        refuse(code, reason);
        return;
    }
    /* A (new) session: its parameters come next, then it starts from the initial state. */
    session.accepted = 1;
    session.active = 0;
    memset(&session.intake, 0, sizeof session.intake);
    session.tick_rate_hz = hello->tick_rate_hz;
    memset(session.readings, 0, sizeof session.readings);
    stop_motors();
}

static void on_param(const hil_param *param)
{
    char reason[HIL_MAX_TEXT + 1];
    hil_param_event event;
    if (!session.accepted) return;
    event = hil_firmware_answer_param(fw, &session.intake, param, &session.sender, reason, sizeof reason);
    if (event == HIL_PARAM_SET_COMPLETE) session.active = 1;
    if (event == HIL_PARAM_REFUSED) end_session();
}

static uint32_t drops(void)
{
    uint32_t total = usart_dropped(), k;
    for (k = 1; k < HIL_ERROR_KINDS; k++) total += reader.counters.errors[k];
    return total;
}

/* Frames dropped since the last report, as a STATUS warning with every counter so far. */
static void report_drops(uint32_t tick)
{
    char text[HIL_MAX_TEXT + 1];
    const uint32_t *e = reader.counters.errors;
    uint32_t now = drops();
    if (now == session.reported_drops) return;
    session.reported_drops = now;
    snprintf(text, sizeof text,
             "link: dropped frames: crc %lu, cobs %lu, msgpack %lu, message %lu, oversize %lu; garbage %lu B, "
             "overrun %lu B",
             (unsigned long)e[HIL_ERR_CRC], (unsigned long)e[HIL_ERR_COBS], (unsigned long)e[HIL_ERR_MSGPACK],
             (unsigned long)e[HIL_ERR_MESSAGE], (unsigned long)e[HIL_ERR_OVERSIZE],
             (unsigned long)reader.counters.garbage_bytes, (unsigned long)usart_dropped());
    hil_send_status(&session.sender, tick, HIL_WARNING, text);
}

static void on_sensors(const hil_message *msg)
{
    char text[HIL_MAX_TEXT + 1];
    uint32_t severity;
    if (!session.active) return;
    if (!hil_unpack_sensors(&session.layout, &msg->u.sensors, session.reading_ptr, session.fresh))
        return; /* values do not match the fresh mask: dropped */
    fw->step(session.reading_ptr, session.fresh, (double)msg->tick / (double)session.tick_rate_hz, session.motors);
    hil_send_actuators(&session.sender, msg->tick, session.motors, fw->actuators);
    while (fw->report(text, sizeof text, &severity)) hil_send_status(&session.sender, msg->tick, severity, text);
    report_drops(msg->tick);
}

static void on_message(const hil_message *msg)
{
    if (msg->type != HIL_HELLO && session.have_last_seq && msg->seq == session.last_seq) return; /* a duplicate */
    session.have_last_seq = 1;
    session.last_seq = msg->seq;
    if (msg->tick > session.latest_tick || msg->type == HIL_HELLO) session.latest_tick = msg->tick;
    switch (msg->type) {
    case HIL_HELLO:
        if (hil_str_equals(&msg->u.hello.role, "hil")) on_hello(&msg->u.hello);
        break;
    case HIL_SENSORS:
        on_sensors(msg);
        break;
    case HIL_PARAM:
        on_param(&msg->u.param);
        break;
    case HIL_GOODBYE:
        end_session();
        break;
    default:
        break; /* HEARTBEAT, STATUS, ACTUATORS: nothing to do */
    }
}

int main(void)
{
    static hil_message msg;
    uint8_t bytes[64];
    size_t k;

    board_clock_init();
    usart_init(BAUD);
    for (k = 0; k < HIL_MAX_SENSORS; k++) session.reading_ptr[k] = session.readings[k];
    hil_reader_init(&reader);
    hil_sender_init(&session.sender, transmit);
    session.last_sent = board_millis();
    for (;;) {
        size_t n = usart_read(bytes, sizeof bytes), offset = 0;
        while (offset < n) {
            size_t used;
            int event = hil_reader_feed(&reader, bytes + offset, n - offset, &used, &msg, NULL);
            offset += used;
            if (event == HIL_READER_MESSAGE) on_message(&msg);
        }
        if (board_millis() - session.last_sent >= HEARTBEAT_MS) hil_send_heartbeat(&session.sender, session.latest_tick);
        if (n == 0) usart_wait_for_input();
    }
}
