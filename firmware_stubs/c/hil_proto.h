/*
 * hil_proto: the firmware side of hil's native wire protocol, version 1 (docs/protocol.md).
 *
 * C99, no heap, no libc beyond memcpy/memset. Compile hil_proto.c into the board project.
 *
 *   frame   = COBS(payload || CRC-32(payload) as u32 LE) || 0x00
 *   payload = msgpack array [type, seq, tick, ...fields]
 *
 * Receiving: feed bytes to a hil_reader (byte streams) or hand one frame to hil_decode_frame
 * (UDP: one frame per datagram); either fills a hil_message, a tagged struct. Sending: the
 * hil_encode_* functions write one complete frame, delimiter included, into a caller buffer
 * of HIL_FRAME_BUFFER bytes. All limits of the protocol are enforced while decoding, before
 * anything is stored.
 *
 * Nothing here keeps global state: every function is reentrant.
 */
#ifndef HIL_PROTO_H
#define HIL_PROTO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HIL_PROTOCOL_VERSION 1u
#define HIL_MAX_PAYLOAD 512u  /* bytes of msgpack in one frame */
/* COBS-encoded payload and CRC, without the delimiter: 512 + 4 + 516 / 254 + 1 = 519 bytes (as
 * hil/wire.py's MAX_FRAME; docs/protocol.md rounds it to 520). A run longer than this without a
 * delimiter is an oversize error. */
#define HIL_MAX_FRAME (HIL_MAX_PAYLOAD + 4u + (HIL_MAX_PAYLOAD + 4u) / 254u + 1u)
#define HIL_FRAME_BUFFER (HIL_MAX_FRAME + 1u) /* 520: room for any frame hil_encode_* writes, delimiter included */
#define HIL_MAX_TEXT 200u     /* bytes of UTF-8 in any string */
#define HIL_MAX_ARRAY 64u     /* elements in any msgpack array */
#define HIL_MAX_VALUES 64u    /* floats in one SENSORS or ACTUATORS message, fields of one sensor */
#define HIL_MAX_SENSORS 16u   /* sensors in one HELLO */
#define HIL_MAX_PARAM_VALUES 48u /* floats in one PARAM */

/* Message types (element 0 of every payload). */
enum hil_type {
    HIL_HELLO = 1,
    HIL_SENSORS = 2,
    HIL_ACTUATORS = 3,
    HIL_HEARTBEAT = 4,
    HIL_STATUS = 5,
    HIL_GOODBYE = 6,
    HIL_PARAM = 7,     /* hil -> firmware, before tick 0: one parameter of the set the firmware's HELLO asked for */
    HIL_PARAM_ACK = 8  /* firmware -> hil: that PARAM was taken */
};

/* STATUS severities. */
enum hil_severity { HIL_DEBUG = 0, HIL_INFO = 1, HIL_WARNING = 2, HIL_ERROR = 3, HIL_CRITICAL = 4 };

/* GOODBYE codes. */
enum hil_goodbye_code {
    HIL_GOODBYE_NORMAL = 0,
    HIL_GOODBYE_VERSION_MISMATCH = 1,
    HIL_GOODBYE_LAYOUT_MISMATCH = 2,
    HIL_GOODBYE_TIMEOUT = 3,
    HIL_GOODBYE_ERROR = 4,
    HIL_GOODBYE_PARAMETER = 5 /* the firmware refuses a parameter hil gave it; the reason names it */
};

/* Why a frame was dropped: the counter names of docs/protocol.md section 9. */
typedef enum hil_error {
    HIL_OK = 0,
    HIL_ERR_CRC = 1,      /* CRC mismatch */
    HIL_ERR_COBS = 2,     /* bad COBS, or fewer than 5 bytes decoded */
    HIL_ERR_MSGPACK = 3,  /* not one well-formed msgpack object within the limits */
    HIL_ERR_MESSAGE = 4,  /* well-formed msgpack, but not a protocol message (types, counts, ranges) */
    HIL_ERR_OVERSIZE = 5  /* more than HIL_MAX_FRAME bytes without a delimiter */
} hil_error;
#define HIL_ERROR_KINDS 6

/* "ok", "crc", "cobs", "msgpack", "message", "oversize"; "?" for anything else. */
const char *hil_error_name(hil_error error);

/* ---- messages ------------------------------------------------------------------------------- */

/* A string as received: `len` bytes of valid UTF-8, NUL-terminated for convenience (the text
 * itself may contain NUL bytes; trust `len`). */
typedef struct hil_str {
    uint16_t len;
    char text[HIL_MAX_TEXT + 1u];
} hil_str;

typedef struct hil_sensor_spec {
    hil_str name;
    uint32_t fields;  /* float values per reading, at most HIL_MAX_VALUES */
    double rate_hz;   /* 0.0 when unknown */
} hil_sensor_spec;

typedef struct hil_hello {
    uint32_t version;
    hil_str role;     /* "hil" or "firmware" */
    hil_str vehicle;  /* "quadrotor" */
    uint32_t actuators;    /* at most HIL_MAX_VALUES */
    uint32_t tick_rate_hz; /* 0: any */
    uint32_t sensor_count; /* at most HIL_MAX_SENSORS */
    hil_sensor_spec sensors[HIL_MAX_SENSORS];
    hil_str params;        /* a firmware's: the parameter set it asks hil for; empty (len 0): none,
                            * and the HELLO is written with 9 elements instead of 10 */
} hil_hello;

typedef struct hil_sensors {
    uint32_t fresh;   /* bit i: sensor i of hil's HELLO has a new reading in values */
    uint32_t count;
    double values[HIL_MAX_VALUES];
} hil_sensors;

typedef struct hil_actuators {
    uint32_t count;
    double values[HIL_MAX_VALUES];
} hil_actuators;

typedef struct hil_status {
    uint32_t severity; /* enum hil_severity */
    hil_str text;
} hil_status;

typedef struct hil_goodbye {
    uint32_t code;     /* enum hil_goodbye_code */
    hil_str reason;
} hil_goodbye;

typedef struct hil_param {
    uint32_t index;    /* below count */
    uint32_t count;    /* parameters in the set, at least 1 */
    hil_str name;
    uint32_t value_count; /* at most HIL_MAX_PARAM_VALUES */
    double values[HIL_MAX_PARAM_VALUES]; /* finite; hil writes them as float64 */
} hil_param;

typedef struct hil_param_ack {
    uint32_t index;
} hil_param_ack;

/* One decoded message: `type` says which member of `u` is valid (HEARTBEAT has none). */
typedef struct hil_message {
    uint32_t type;     /* enum hil_type */
    uint32_t seq;
    uint32_t tick;
    union {
        hil_hello hello;
        hil_sensors sensors;
        hil_actuators actuators;
        hil_status status;
        hil_goodbye goodbye;
        hil_param param;
        hil_param_ack param_ack;
    } u;
} hil_message;

/* ---- framing primitives ----------------------------------------------------------------------- */

/* CRC-32/ISO-HDLC (zlib): crc32 of "123456789" is 0xCBF43926. */
uint32_t hil_crc32(const uint8_t *data, size_t len);
/* Incremental form: start with crc = 0, feed pieces, the result is the CRC of all of them. */
uint32_t hil_crc32_update(uint32_t crc, const uint8_t *data, size_t len);

/* COBS-encode len bytes into out (room for cap bytes; len + len / 254 + 1 always suffices).
 * Writes no delimiter. Returns the encoded length, or 0 if cap is too small. */
size_t hil_cobs_encode(const uint8_t *in, size_t len, uint8_t *out, size_t cap);

/* COBS-decode a frame given without its delimiter. out may equal in (decoding in place is
 * safe). Returns HIL_OK and sets *out_len, or HIL_ERR_COBS (zero byte, block past the end,
 * or cap too small). */
hil_error hil_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t cap, size_t *out_len);

/* ---- decoding ----------------------------------------------------------------------------------- */

/* Parse a msgpack payload (no CRC) into *msg. Returns HIL_OK, HIL_ERR_MSGPACK or HIL_ERR_MESSAGE
 * (also for a float that is NaN, infinite or beyond float32's range). */
hil_error hil_parse_payload(const uint8_t *payload, size_t len, hil_message *msg);

/* Decode one frame given without its 0x00 delimiter: length check, COBS, CRC, payload.
 * Works in place: the frame's bytes are overwritten. Returns HIL_OK or the error kind;
 * on error *msg holds nothing useful. */
hil_error hil_decode_frame(uint8_t *frame, size_t len, hil_message *msg);

/* ---- streaming reader (serial, pty, TCP) ------------------------------------------------------------ */

typedef struct hil_counters {
    uint32_t frames;         /* frames decoded */
    uint32_t garbage_bytes;  /* bytes dropped: oversize runs and frames that failed to decode */
    uint32_t resyncs;        /* times data was dropped and reading picked up at the next delimiter */
    uint32_t errors[HIL_ERROR_KINDS]; /* indexed by hil_error; errors[HIL_OK] stays 0 */
} hil_counters;

typedef struct hil_reader {
    uint8_t buffer[HIL_MAX_FRAME];
    size_t length;
    int discarding;          /* in an oversize run: dropping bytes up to the next delimiter */
    hil_counters counters;
} hil_reader;

/* Returned by hil_reader_push: nothing yet, a message in *msg, or a dropped frame. */
enum hil_reader_event { HIL_READER_NONE = 0, HIL_READER_MESSAGE = 1, HIL_READER_DROPPED = 2 };

void hil_reader_init(hil_reader *reader);
/* Forget a partial frame (e.g. at the start of a new datagram); counters are kept. */
void hil_reader_reset(hil_reader *reader);
/* Feed one byte. Returns HIL_READER_MESSAGE when the byte completes a valid frame (then *msg
 * holds it), HIL_READER_DROPPED when it completes a bad frame or starts an oversize run (then
 * *error says which kind, already counted), else HIL_READER_NONE. error may be NULL. */
int hil_reader_push(hil_reader *reader, uint8_t byte, hil_message *msg, hil_error *error);
/* Feed up to len bytes, stopping after the first byte that yields an event; *consumed says how
 * many bytes were used (call again with the rest). Returns the event as hil_reader_push does. */
int hil_reader_feed(hil_reader *reader, const uint8_t *data, size_t len, size_t *consumed,
                    hil_message *msg, hil_error *error);

/* ---- encoding ------------------------------------------------------------------------------------ */
/* Every hil_encode_* writes one complete frame (delimiter included) into out and returns its
 * length, or 0 if a limit is exceeded (string over HIL_MAX_TEXT bytes, more than
 * HIL_MAX_VALUES values or HIL_MAX_SENSORS sensors, payload over HIL_MAX_PAYLOAD, a value that
 * is NaN, infinite or beyond float32's range) or cap is too small. A buffer of HIL_FRAME_BUFFER bytes always suffices. Floats are written as
 * float32 (0xca) but a PARAM's values, which are float64 (0xcb), integers in their shortest form: byte
 * for byte what hil writes. Strings are
 * taken as they are: pass valid UTF-8. */

size_t hil_encode_hello(uint8_t *out, size_t cap, uint32_t seq, const hil_hello *hello); /* tick 0 */
size_t hil_encode_sensors(uint8_t *out, size_t cap, uint32_t seq, uint32_t tick, uint32_t fresh,
                          const double *values, size_t count);
size_t hil_encode_actuators(uint8_t *out, size_t cap, uint32_t seq, uint32_t tick, const double *values,
                            size_t count);
size_t hil_encode_heartbeat(uint8_t *out, size_t cap, uint32_t seq, uint32_t tick);
/* text: NUL-terminated UTF-8, at most HIL_MAX_TEXT bytes. */
size_t hil_encode_status(uint8_t *out, size_t cap, uint32_t seq, uint32_t tick, uint32_t severity,
                         const char *text);
size_t hil_encode_goodbye(uint8_t *out, size_t cap, uint32_t seq, uint32_t tick, uint32_t code,
                          const char *reason);
size_t hil_encode_param_ack(uint8_t *out, size_t cap, uint32_t seq, uint32_t index); /* tick 0 */
/* Any message, from the tagged struct (hil_str lengths are used; HELLO uses msg->tick). */
size_t hil_encode(uint8_t *out, size_t cap, const hil_message *msg);
/* The msgpack payload alone, no frame (for tests and other transports). Returns its length or 0. */
size_t hil_pack(uint8_t *out, size_t cap, const hil_message *msg);

/* Set a hil_str from a NUL-terminated string; returns 0 if longer than HIL_MAX_TEXT bytes. */
int hil_str_set(hil_str *str, const char *text);
/* 1 if str holds exactly the NUL-terminated text. */
int hil_str_equals(const hil_str *str, const char *text);

/* ---- sensor layout ------------------------------------------------------------------------------- */

/* A sensor the firmware needs: its name (NUL-terminated) and number of fields. */
typedef struct hil_sensor_need {
    const char *name;
    uint32_t fields;
} hil_sensor_need;

/* hil's sensor layout mapped onto the firmware's needs. */
typedef struct hil_layout {
    uint32_t count;                   /* sensors in hil's HELLO: the bits of `fresh` */
    uint32_t fields[HIL_MAX_SENSORS]; /* fields of hil's sensor i */
    int32_t slot[HIL_MAX_SENSORS];    /* index into the needs for hil's sensor i, or -1: not needed */
    uint32_t need_count;
} hil_layout;

typedef enum hil_layout_result {
    HIL_LAYOUT_OK = 0,
    HIL_LAYOUT_MISSING = 1,        /* a needed sensor is not in hil's HELLO */
    HIL_LAYOUT_FIELDS = 2,         /* present, but with another number of fields */
    HIL_LAYOUT_TOO_MANY_NEEDS = 3  /* more than HIL_MAX_SENSORS needs */
} hil_layout_result;

/* Map hil's HELLO onto the needs. On a mismatch, *which (if not NULL) is the index of the
 * need concerned and the layout must not be used. */
hil_layout_result hil_layout_map(hil_layout *layout, const hil_hello *hil_hello_msg,
                                 const hil_sensor_need *needs, size_t need_count, size_t *which);

/* Unpack a SENSORS message: for each need n, fresh[n] is set to 1 if it has a new reading at
 * this tick (and readings[n][0 .. fields-1] receives it) or 0 (readings[n] is left as it was:
 * the latest reading). Returns 0 and changes nothing if `values` does not match the `fresh`
 * mask (wrong length, or a bit set beyond hil's sensors): drop the frame and count it. */
int hil_unpack_sensors(const hil_layout *layout, const hil_sensors *msg, double *const *readings, int *fresh);

#ifdef __cplusplus
}
#endif

#endif /* HIL_PROTO_H */
