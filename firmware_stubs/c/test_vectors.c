/*
 * test_vectors: hil_proto checked from the outside (tests/test_c_firmware.py compares its
 * output with hil/wire.py byte for byte). Reads commands from stdin, one per line, and answers
 * each with one line (R answers with several, then END):
 *
 *   V              the messages of docs/protocol.md's test vectors, encoded here:
 *                  "VEC <name> <frame hex>" lines, then END
 *   D <hex>        decode a frame given without its delimiter: "OK <message>" or "ERR <kind>"
 *   P <hex>        parse a msgpack payload: "OK <message>" or "ERR <kind>"
 *   E <message>    encode: "F <frame hex, delimiter included>" or "ERR encode"
 *   A <message>    pack only: "A <payload hex>" or "ERR encode"
 *   C <hex>        COBS-encode: "C <hex>";  U <hex>: COBS-decode: "U <hex>" or "ERR cobs"
 *   K <hex>        CRC-32: "K <8 hex digits>"
 *   R <hex>        feed a byte stream to a reader: "MSG <message>" / "DROP <kind>" per event,
 *                  then "END frames garbage resyncs crc cobs msgpack message oversize"
 *   X <what> <n>   encode with the hil_encode_* function of <what> (status, goodbye: a text of n
 *                  'a's; sensors, actuators: n values 0, 1, 2...): "F <frame hex>" or "ERR encode"
 *   H <hex>        decode a HELLO frame and map it onto the needs imu 6, baro 2, mag 3, gps 6:
 *                  "LAYOUT <result> <which>"
 *   S <hex>        decode a SENSORS frame and unpack it with the last layout into the latest
 *                  readings: "UNPACK 0" (rejected) or "UNPACK 1 <fresh x4> <17 readings>"
 *
 * <message> is a line of space-separated tokens: type seq tick, then per type
 *   1: version role vehicle actuators tick_rate_hz count {name fields rate}*count params
 *   2: fresh count value*count      3: count value*count      4: (nothing)
 *   5: severity text                6: code text
 *   7: index count name n value*n   8: index
 * integers in decimal, floats as the 16 hex digits of their IEEE double bits, strings as hex
 * of their bytes ("-" when empty).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hil_proto.h"

#define LINE_MAX_CHARS (1u << 18)
#define BYTES_MAX (LINE_MAX_CHARS / 2u)

static char line[LINE_MAX_CHARS + 2];
static uint8_t bytes[BYTES_MAX];
static uint8_t scratch[BYTES_MAX * 2 + 16];

/* ---- text helpers ------------------------------------------------------------------------------ */

static int hex_value(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Parse hex (no separators) into out; returns the byte count or -1. "-" is empty. */
static long parse_hex(const char *text, uint8_t *out, size_t cap)
{
    size_t n = 0;
    if (strcmp(text, "-") == 0) return 0;
    while (text[0] != '\0') {
        int hi = hex_value((unsigned char)text[0]), lo;
        if (hi < 0 || text[1] == '\0') return -1;
        lo = hex_value((unsigned char)text[1]);
        if (lo < 0 || n >= cap) return -1;
        out[n++] = (uint8_t)(hi << 4 | lo);
        text += 2;
    }
    return (long)n;
}

static void print_hex(const uint8_t *data, size_t n)
{
    size_t k;
    if (n == 0) fputc('-', stdout);
    for (k = 0; k < n; k++) printf("%02x", data[k]);
}

static void print_double(double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    printf(" %016llx", (unsigned long long)bits);
}

static void print_str(const hil_str *s)
{
    fputc(' ', stdout);
    print_hex((const uint8_t *)s->text, s->len);
}

static void print_message(const hil_message *m)
{
    uint32_t k;
    printf("%lu %lu %lu", (unsigned long)m->type, (unsigned long)m->seq, (unsigned long)m->tick);
    switch (m->type) {
    case HIL_HELLO: {
        const hil_hello *h = &m->u.hello;
        printf(" %lu", (unsigned long)h->version);
        print_str(&h->role);
        print_str(&h->vehicle);
        printf(" %lu %lu %lu", (unsigned long)h->actuators, (unsigned long)h->tick_rate_hz,
               (unsigned long)h->sensor_count);
        for (k = 0; k < h->sensor_count; k++) {
            print_str(&h->sensors[k].name);
            printf(" %lu", (unsigned long)h->sensors[k].fields);
            print_double(h->sensors[k].rate_hz);
        }
        print_str(&h->params);
        break;
    }
    case HIL_PARAM:
        printf(" %lu %lu", (unsigned long)m->u.param.index, (unsigned long)m->u.param.count);
        print_str(&m->u.param.name);
        printf(" %lu", (unsigned long)m->u.param.value_count);
        for (k = 0; k < m->u.param.value_count; k++) print_double(m->u.param.values[k]);
        break;
    case HIL_PARAM_ACK:
        printf(" %lu", (unsigned long)m->u.param_ack.index);
        break;
    case HIL_SENSORS:
        printf(" %lu %lu", (unsigned long)m->u.sensors.fresh, (unsigned long)m->u.sensors.count);
        for (k = 0; k < m->u.sensors.count; k++) print_double(m->u.sensors.values[k]);
        break;
    case HIL_ACTUATORS:
        printf(" %lu", (unsigned long)m->u.actuators.count);
        for (k = 0; k < m->u.actuators.count; k++) print_double(m->u.actuators.values[k]);
        break;
    case HIL_STATUS:
        printf(" %lu", (unsigned long)m->u.status.severity);
        print_str(&m->u.status.text);
        break;
    case HIL_GOODBYE:
        printf(" %lu", (unsigned long)m->u.goodbye.code);
        print_str(&m->u.goodbye.reason);
        break;
    default:
        break;
    }
}

/* ---- parsing a <message> ----------------------------------------------------------------------- */

static char *next_token(char **cursor)
{
    char *p = *cursor, *start;
    while (*p == ' ') p++;
    if (*p == '\0') return NULL;
    start = p;
    while (*p != ' ' && *p != '\0') p++;
    if (*p == ' ') *p++ = '\0';
    *cursor = p;
    return start;
}

static int token_uint(char **cursor, uint32_t *out)
{
    char *t = next_token(cursor), *end;
    unsigned long v;
    if (t == NULL) return 0;
    v = strtoul(t, &end, 10);
    if (*end != '\0') return 0;
    *out = (uint32_t)v;
    return 1;
}

static int token_double(char **cursor, double *out)
{
    char *t = next_token(cursor), *end;
    unsigned long long bits;
    if (t == NULL) return 0;
    bits = strtoull(t, &end, 16);
    if (*end != '\0') return 0;
    memcpy(out, &bits, sizeof *out);
    return 1;
}

static int token_str(char **cursor, hil_str *out)
{
    char *t = next_token(cursor);
    long n;
    if (t == NULL) return 0;
    n = parse_hex(t, (uint8_t *)out->text, HIL_MAX_TEXT);
    if (n < 0) return 0;
    out->text[n] = '\0';
    out->len = (uint16_t)n;
    return 1;
}

static int parse_message(char *text, hil_message *m)
{
    char *cursor = text;
    uint32_t k;
    memset(m, 0, sizeof *m);
    if (!token_uint(&cursor, &m->type) || !token_uint(&cursor, &m->seq) || !token_uint(&cursor, &m->tick)) return 0;
    switch (m->type) {
    case HIL_HELLO: {
        hil_hello *h = &m->u.hello;
        if (!token_uint(&cursor, &h->version) || !token_str(&cursor, &h->role) || !token_str(&cursor, &h->vehicle) ||
            !token_uint(&cursor, &h->actuators) || !token_uint(&cursor, &h->tick_rate_hz) ||
            !token_uint(&cursor, &h->sensor_count) || h->sensor_count > HIL_MAX_SENSORS)
            return 0;
        for (k = 0; k < h->sensor_count; k++)
            if (!token_str(&cursor, &h->sensors[k].name) || !token_uint(&cursor, &h->sensors[k].fields) ||
                !token_double(&cursor, &h->sensors[k].rate_hz))
                return 0;
        return token_str(&cursor, &h->params);
    }
    case HIL_PARAM:
        if (!token_uint(&cursor, &m->u.param.index) || !token_uint(&cursor, &m->u.param.count) ||
            !token_str(&cursor, &m->u.param.name) || !token_uint(&cursor, &m->u.param.value_count) ||
            m->u.param.value_count > HIL_MAX_PARAM_VALUES)
            return 0;
        for (k = 0; k < m->u.param.value_count; k++)
            if (!token_double(&cursor, &m->u.param.values[k])) return 0;
        return 1;
    case HIL_PARAM_ACK:
        return token_uint(&cursor, &m->u.param_ack.index);
    case HIL_SENSORS:
        if (!token_uint(&cursor, &m->u.sensors.fresh) || !token_uint(&cursor, &m->u.sensors.count) ||
            m->u.sensors.count > HIL_MAX_VALUES)
            return 0;
        for (k = 0; k < m->u.sensors.count; k++)
            if (!token_double(&cursor, &m->u.sensors.values[k])) return 0;
        return 1;
    case HIL_ACTUATORS:
        if (!token_uint(&cursor, &m->u.actuators.count) || m->u.actuators.count > HIL_MAX_VALUES) return 0;
        for (k = 0; k < m->u.actuators.count; k++)
            if (!token_double(&cursor, &m->u.actuators.values[k])) return 0;
        return 1;
    case HIL_HEARTBEAT:
        return 1;
    case HIL_STATUS:
        return token_uint(&cursor, &m->u.status.severity) && token_str(&cursor, &m->u.status.text);
    case HIL_GOODBYE:
        return token_uint(&cursor, &m->u.goodbye.code) && token_str(&cursor, &m->u.goodbye.reason);
    default:
        return 0;
    }
}

/* ---- the doc's test vectors ---------------------------------------------------------------------- */

static void vector(const char *name, const uint8_t *frame, size_t length)
{
    printf("VEC %s ", name);
    print_hex(frame, length);
    fputc('\n', stdout);
}

static void hello_vector(const char *name, const char *role, const char *params)
{
    static const char *const names[4] = {"imu", "baro", "mag", "gps"};
    static const uint32_t fields[4] = {6, 2, 3, 6};
    static const double rates[4] = {1000.0, 50.0, 100.0, 10.0};
    hil_hello hello;
    uint8_t frame[HIL_FRAME_BUFFER];
    int k;
    memset(&hello, 0, sizeof hello);
    hello.version = 1;
    hil_str_set(&hello.role, role);
    hil_str_set(&hello.vehicle, "quadrotor");
    hello.actuators = 4;
    hello.tick_rate_hz = 1000;
    hello.sensor_count = 4;
    hil_str_set(&hello.params, params);
    for (k = 0; k < 4; k++) {
        hil_str_set(&hello.sensors[k].name, names[k]);
        hello.sensors[k].fields = fields[k];
        hello.sensors[k].rate_hz = rates[k];
    }
    vector(name, frame, hil_encode_hello(frame, sizeof frame, 0, &hello));
}

static void cobs_vector(const char *name, const uint8_t *in, size_t length)
{
    uint8_t out[600];
    vector(name, out, hil_cobs_encode(in, length, out, sizeof out));
}

static void print_vectors(void)
{
    static const double sensors[8] = {0, 0, 0, 0, 0, -9.80665, 101325.0, 288.15};
    static const double actuators[4] = {0.0, 0.5, 0.25, 1.0};
    uint8_t frame[HIL_FRAME_BUFFER], in[255];
    int k;
    hello_vector("hello_hil", "hil", "");
    hello_vector("hello_firmware", "firmware", "");
    hello_vector("hello_firmware_params", "firmware", "quad_pid");
    vector("sensors", frame, hil_encode_sensors(frame, sizeof frame, 21, 20, 3, sensors, 8));
    vector("actuators", frame, hil_encode_actuators(frame, sizeof frame, 20, 20, actuators, 4));
    vector("heartbeat", frame, hil_encode_heartbeat(frame, sizeof frame, 3, 0));
    vector("status", frame, hil_encode_status(frame, sizeof frame, 21, 20, 1, "armed"));
    vector("goodbye", frame, hil_encode_goodbye(frame, sizeof frame, 4000, 20000, 0, "run complete"));
    {
        static hil_message param;
        static const double inertia[3] = {0.012, 0.012, 0.022};
        memset(&param, 0, sizeof param);
        param.type = HIL_PARAM;
        param.seq = 1;
        param.u.param.index = 4;
        param.u.param.count = 22;
        hil_str_set(&param.u.param.name, "inertia");
        param.u.param.value_count = 3;
        memcpy(param.u.param.values, inertia, sizeof inertia);
        vector("param", frame, hil_encode(frame, sizeof frame, &param));
    }
    vector("param_ack", frame, hil_encode_param_ack(frame, sizeof frame, 5, 4));
    vector("goodbye_parameter", frame, hil_encode_goodbye(frame, sizeof frame, 6, 0, HIL_GOODBYE_PARAMETER,
                                                          "parameter mass: expected 1 value, got 3"));
    in[0] = 0x00;
    cobs_vector("cobs_00", in, 1);
    in[1] = 0x00;
    cobs_vector("cobs_00_00", in, 2);
    in[0] = 0x11; in[1] = 0x22; in[2] = 0x00; in[3] = 0x33;
    cobs_vector("cobs_11_22_00_33", in, 4);
    in[0] = 0x11; in[1] = 0x22; in[2] = 0x33; in[3] = 0x44;
    cobs_vector("cobs_11_22_33_44", in, 4);
    for (k = 0; k < 255; k++) in[k] = (uint8_t)(k + 1);
    cobs_vector("cobs_01_to_fe", in, 254);
    cobs_vector("cobs_01_to_ff", in, 255);
    for (k = 0; k < 255; k++) in[k] = (uint8_t)k;
    cobs_vector("cobs_00_to_fe", in, 255);
    {
        static const uint8_t check[9] = {'1', '2', '3', '4', '5', '6', '7', '8', '9'};
        printf("VEC crc_check %08lx\n", (unsigned long)hil_crc32(check, 9));
    }
    printf("END\n");
}

/* ---- the sensor layout, across S commands ---------------------------------------------------------- */

static const hil_sensor_need needs[4] = {{"imu", 6}, {"baro", 2}, {"mag", 3}, {"gps", 6}};
static hil_layout layout;
static double readings[4][HIL_MAX_VALUES];

static void layout_command(long n)
{
    static hil_message m;
    size_t which = 0;
    hil_layout_result result;
    hil_error e = hil_decode_frame(bytes, (size_t)n, &m);
    if (e != HIL_OK || m.type != HIL_HELLO) {
        printf("ERR %s\n", e != HIL_OK ? hil_error_name(e) : "type");
        return;
    }
    result = hil_layout_map(&layout, &m.u.hello, needs, 4, &which);
    printf("LAYOUT %d %lu\n", (int)result, (unsigned long)which);
}

static void sensors_command(long n)
{
    static hil_message m;
    double *pointers[4];
    int fresh[4] = {7, 7, 7, 7}, k, j;
    hil_error e = hil_decode_frame(bytes, (size_t)n, &m);
    if (e != HIL_OK || m.type != HIL_SENSORS) {
        printf("ERR %s\n", e != HIL_OK ? hil_error_name(e) : "type");
        return;
    }
    for (k = 0; k < 4; k++) pointers[k] = readings[k];
    if (!hil_unpack_sensors(&layout, &m.u.sensors, pointers, fresh)) {
        printf("UNPACK 0\n");
        return;
    }
    printf("UNPACK 1 %d %d %d %d", fresh[0], fresh[1], fresh[2], fresh[3]);
    for (k = 0; k < 4; k++)
        for (j = 0; j < (int)needs[k].fields; j++) print_double(readings[k][j]);
    fputc('\n', stdout);
}

/* ---- main ---------------------------------------------------------------------------------------- */

int main(void)
{
    static hil_message m;
    while (fgets(line, sizeof line, stdin) != NULL) {
        size_t length = strlen(line);
        char command, *argument;
        long n = 0;
        if (length > 0 && line[length - 1] == '\n') line[--length] = '\0';
        else if (length >= LINE_MAX_CHARS) {
            int c;
            while ((c = getchar()) != EOF && c != '\n') {
            }
            printf("ERR line\n");
            continue;
        }
        if (length == 0) continue;
        command = line[0];
        argument = length > 2 ? line + 2 : line + length;
        if (strchr("DPCUKRHS", command) != NULL) {
            n = parse_hex(argument, bytes, sizeof bytes);
            if (n < 0) {
                printf("ERR hex\n");
                continue;
            }
        }
        switch (command) {
        case 'V':
            print_vectors();
            break;
        case 'D':
        case 'P': {
            hil_error e = command == 'D' ? hil_decode_frame(bytes, (size_t)n, &m)
                                         : hil_parse_payload(bytes, (size_t)n, &m);
            if (e == HIL_OK) {
                printf("OK ");
                print_message(&m);
                fputc('\n', stdout);
            } else {
                printf("ERR %s\n", hil_error_name(e));
            }
            break;
        }
        case 'E':
        case 'A': {
            uint8_t frame[HIL_FRAME_BUFFER];
            size_t written;
            if (!parse_message(argument, &m)) {
                printf("ERR syntax\n");
                break;
            }
            written = command == 'E' ? hil_encode(frame, sizeof frame, &m) : hil_pack(frame, sizeof frame, &m);
            if (written == 0) {
                printf("ERR encode\n");
                break;
            }
            printf("%c ", command == 'E' ? 'F' : 'A');
            print_hex(frame, written);
            fputc('\n', stdout);
            break;
        }
        case 'C': {
            size_t written = hil_cobs_encode(bytes, (size_t)n, scratch, sizeof scratch);
            printf("C ");
            print_hex(scratch, written);
            fputc('\n', stdout);
            break;
        }
        case 'U': {
            size_t written;
            if (hil_cobs_decode(bytes, (size_t)n, scratch, sizeof scratch, &written) != HIL_OK) {
                printf("ERR cobs\n");
                break;
            }
            printf("U ");
            print_hex(scratch, written);
            fputc('\n', stdout);
            break;
        }
        case 'K':
            printf("K %08lx\n", (unsigned long)hil_crc32(bytes, (size_t)n));
            break;
        case 'R': {
            static hil_reader reader;
            size_t offset = 0;
            hil_reader_init(&reader);
            while (offset < (size_t)n) {
                size_t used;
                hil_error e = HIL_OK;
                int event = hil_reader_feed(&reader, bytes + offset, (size_t)n - offset, &used, &m, &e);
                offset += used;
                if (event == HIL_READER_MESSAGE) {
                    printf("MSG ");
                    print_message(&m);
                    fputc('\n', stdout);
                } else if (event == HIL_READER_DROPPED) {
                    printf("DROP %s\n", hil_error_name(e));
                }
            }
            printf("END %lu %lu %lu %lu %lu %lu %lu %lu\n", (unsigned long)reader.counters.frames,
                   (unsigned long)reader.counters.garbage_bytes, (unsigned long)reader.counters.resyncs,
                   (unsigned long)reader.counters.errors[HIL_ERR_CRC], (unsigned long)reader.counters.errors[HIL_ERR_COBS],
                   (unsigned long)reader.counters.errors[HIL_ERR_MSGPACK],
                   (unsigned long)reader.counters.errors[HIL_ERR_MESSAGE],
                   (unsigned long)reader.counters.errors[HIL_ERR_OVERSIZE]);
            break;
        }
        case 'X': {
            static char text[1024];
            static double values[128];
            uint8_t frame[HIL_FRAME_BUFFER];
            char what[16];
            int count = 0, k;
            size_t written = 0;
            if (sscanf(argument, "%15s %d", what, &count) != 2 || count < 0 || count > 1000) {
                printf("ERR syntax\n");
                break;
            }
            for (k = 0; k < count; k++) text[k] = 'a';
            text[count] = '\0';
            for (k = 0; k < 128; k++) values[k] = k;
            if (strcmp(what, "status") == 0) written = hil_encode_status(frame, sizeof frame, 1, 2, 1, text);
            else if (strcmp(what, "goodbye") == 0) written = hil_encode_goodbye(frame, sizeof frame, 1, 2, 0, text);
            else if (strcmp(what, "sensors") == 0 && count <= 128)
                written = hil_encode_sensors(frame, sizeof frame, 1, 2, 3, values, (size_t)count);
            else if (strcmp(what, "actuators") == 0 && count <= 128)
                written = hil_encode_actuators(frame, sizeof frame, 1, 2, values, (size_t)count);
            if (written == 0) {
                printf("ERR encode\n");
                break;
            }
            printf("F ");
            print_hex(frame, written);
            fputc('\n', stdout);
            break;
        }
        case 'H':
            layout_command(n);
            break;
        case 'S':
            sensors_command(n);
            break;
        default:
            printf("ERR command\n");
        }
        fflush(stdout);
    }
    return 0;
}
