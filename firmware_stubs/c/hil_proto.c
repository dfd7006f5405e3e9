/*
 * hil_proto: the firmware side of hil's native wire protocol, version 1. See hil_proto.h and
 * docs/protocol.md. C99, no heap, no libc beyond memcpy/memset, no global mutable state.
 */
#include "hil_proto.h"

#include <string.h>

/* ---- limits the decoder applies while reading msgpack, before storing anything ---------------- */

/* Strings longer than this are a msgpack error, shorter ones over HIL_MAX_TEXT a message error:
 * the same split as hil/wire.py, whose unpacker allows 4 bytes per character of text. */
#define MP_MAX_STR (HIL_MAX_TEXT * 4u)
/* The largest finite float32: every float on the wire is finite and fits float32. */
#define F32_MAX 3.4028234663852886e38

/* Comparisons with NaN are false, so NaN fails this as the infinities do. */
static int f32_finite(double v)
{
    return v >= -F32_MAX && v <= F32_MAX;
}

/* v - v is NaN for NaN and the infinities, 0 for every finite v (no <math.h> here). */
static int f64_finite(double v)
{
    return v - v == 0.0;
}

const char *hil_error_name(hil_error error)
{
    switch (error) {
    case HIL_OK: return "ok";
    case HIL_ERR_CRC: return "crc";
    case HIL_ERR_COBS: return "cobs";
    case HIL_ERR_MSGPACK: return "msgpack";
    case HIL_ERR_MESSAGE: return "message";
    case HIL_ERR_OVERSIZE: return "oversize";
    }
    return "?";
}

/* ---- CRC-32/ISO-HDLC ---------------------------------------------------------------------------------- */

/* Nibble table of the reflected polynomial 0xEDB88320: 64 bytes of flash, two lookups a byte. */
static const uint32_t crc_nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
    0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu, 0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
};

uint32_t hil_crc32_update(uint32_t crc, const uint8_t *data, size_t len)
{
    size_t i;
    crc = ~crc;
    for (i = 0; i < len; i++) {
        crc ^= data[i];
        crc = (crc >> 4) ^ crc_nibble[crc & 0x0Fu];
        crc = (crc >> 4) ^ crc_nibble[crc & 0x0Fu];
    }
    return ~crc;
}

uint32_t hil_crc32(const uint8_t *data, size_t len)
{
    return hil_crc32_update(0u, data, len);
}

/* ---- COBS ----------------------------------------------------------------------------------------- */

size_t hil_cobs_encode(const uint8_t *in, size_t len, uint8_t *out, size_t cap)
{
    size_t o = 0, code_at, i;
    uint8_t code = 1;
    if (cap < 1) return 0;
    code_at = o++;
    for (i = 0; i < len; i++) {
        uint8_t byte = in[i];
        if (byte == 0) {
            out[code_at] = code;
            code = 1;
            if (o >= cap) return 0;
            code_at = o++;
        } else {
            if (o >= cap) return 0;
            out[o++] = byte;
            code++;
            if (code == 255) {
                out[code_at] = 255;
                code = 1;
                if (i + 1 == len) return o; /* ends on a full block: no empty block after it */
                if (o >= cap) return 0;
                code_at = o++;
            }
        }
    }
    out[code_at] = code;
    return o;
}

hil_error hil_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t cap, size_t *out_len)
{
    /* The output never runs ahead of the input (a block of c bytes yields at most c bytes),
     * so a forward copy works in place. */
    size_t i = 0, o = 0;
    while (i < len) {
        size_t code = in[i], end, k;
        if (code == 0) return HIL_ERR_COBS;
        end = i + code;
        if (end > len) return HIL_ERR_COBS;
        for (k = i + 1; k < end; k++) {
            if (in[k] == 0) return HIL_ERR_COBS;
            if (o >= cap) return HIL_ERR_COBS;
            out[o++] = in[k];
        }
        i = end;
        if (code != 255 && i < len) {
            if (o >= cap) return HIL_ERR_COBS;
            out[o++] = 0;
        }
    }
    *out_len = o;
    return HIL_OK;
}

/* ---- msgpack reading -------------------------------------------------------------------------------- */

enum mp_kind { MP_NIL, MP_BOOL, MP_UINT, MP_NINT, MP_FLOAT, MP_STR, MP_BIN, MP_ARRAY, MP_MAP, MP_EXT };

typedef struct mp_obj {
    int kind;
    uint32_t len;          /* STR, BIN, EXT: bytes; ARRAY, MAP: elements (MAP: pairs) */
    uint64_t u;            /* UINT */
    int64_t i;             /* NINT */
    double f;              /* FLOAT */
    const uint8_t *data;   /* STR */
} mp_obj;

typedef struct mp_cursor {
    const uint8_t *p;
    size_t len;
    size_t pos;
} mp_cursor;

static uint64_t be_read(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    unsigned k;
    for (k = 0; k < n; k++) v = (v << 8) | p[k];
    return v;
}

static int mp_take(mp_cursor *c, size_t n, const uint8_t **at)
{
    if (c->len - c->pos < n) return 0;
    *at = c->p + c->pos;
    c->pos += n;
    return 1;
}

static float f32_from_bits(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static double f64_from_bits(uint64_t bits)
{
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF). */
static int utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        size_t extra, k;
        uint8_t lo = 0x80, hi = 0xBF;
        if (b < 0x80) { i++; continue; }
        if (b >= 0xC2 && b <= 0xDF) extra = 1;
        else if (b >= 0xE0 && b <= 0xEF) {
            extra = 2;
            if (b == 0xE0) lo = 0xA0;
            if (b == 0xED) hi = 0x9F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            extra = 3;
            if (b == 0xF0) lo = 0x90;
            if (b == 0xF4) hi = 0x8F;
        } else return 0;
        if (n - i - 1 < extra) return 0;
        if (s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (k = 2; k <= extra; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) return 0;
        i += extra + 1;
    }
    return 1;
}

/* Read one object header (and a scalar's value, a string's bytes). Containers' elements are
 * not read. Enforces the length limits; returns HIL_ERR_MSGPACK on anything malformed. */
static hil_error mp_next(mp_cursor *c, mp_obj *o)
{
    const uint8_t *at;
    uint8_t t;
    uint64_t n = 0;
    if (!mp_take(c, 1, &at)) return HIL_ERR_MSGPACK;
    t = at[0];
    memset(o, 0, sizeof *o);
    if (t <= 0x7f) { o->kind = MP_UINT; o->u = t; return HIL_OK; }
    if (t >= 0xe0) { o->kind = MP_NINT; o->i = (int64_t)t - 256; return HIL_OK; }
    if (t >= 0x80 && t <= 0x8f) { o->kind = MP_MAP; n = t & 0x0fu; goto map; }
    if (t >= 0x90 && t <= 0x9f) { o->kind = MP_ARRAY; n = t & 0x0fu; goto array; }
    if (t >= 0xa0 && t <= 0xbf) { o->kind = MP_STR; n = t & 0x1fu; goto str; }
    switch (t) {
    case 0xc0: o->kind = MP_NIL; return HIL_OK;
    case 0xc2: case 0xc3: o->kind = MP_BOOL; o->u = t - 0xc2u; return HIL_OK;
    case 0xcc: case 0xcd: case 0xce: case 0xcf: {
        unsigned size = 1u << (t - 0xcc);
        if (!mp_take(c, size, &at)) return HIL_ERR_MSGPACK;
        o->kind = MP_UINT;
        o->u = be_read(at, size);
        return HIL_OK;
    }
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        unsigned size = 1u << (t - 0xd0);
        uint64_t raw, sign;
        if (!mp_take(c, size, &at)) return HIL_ERR_MSGPACK;
        raw = be_read(at, size);
        sign = (uint64_t)1 << (size * 8 - 1);
        if (raw & sign) {
            /* Negative: two's complement of `size` bytes. */
            uint64_t magnitude = (size == 8 ? ~raw : (~raw & ((sign << 1) - 1))) + 1;
            o->kind = MP_NINT;
            o->i = magnitude == ((uint64_t)1 << 63) ? INT64_MIN : -(int64_t)magnitude;
        } else {
            o->kind = MP_UINT;
            o->u = raw;
        }
        return HIL_OK;
    }
    case 0xca:
        if (!mp_take(c, 4, &at)) return HIL_ERR_MSGPACK;
        o->kind = MP_FLOAT;
        o->f = (double)f32_from_bits((uint32_t)be_read(at, 4));
        return HIL_OK;
    case 0xcb:
        if (!mp_take(c, 8, &at)) return HIL_ERR_MSGPACK;
        o->kind = MP_FLOAT;
        o->f = f64_from_bits(be_read(at, 8));
        return HIL_OK;
    case 0xd9: case 0xda: case 0xdb: {
        unsigned size = 1u << (t - 0xd9);
        if (!mp_take(c, size, &at)) return HIL_ERR_MSGPACK;
        o->kind = MP_STR;
        n = be_read(at, size);
        goto str;
    }
    case 0xc4: case 0xc5: case 0xc6: {
        unsigned size = 1u << (t - 0xc4);
        if (!mp_take(c, size, &at)) return HIL_ERR_MSGPACK;
        o->kind = MP_BIN;
        n = be_read(at, size);
        if (n > 0) return HIL_ERR_MSGPACK; /* no binaries in this protocol */
        return HIL_OK;
    }
    case 0xdc: case 0xdd: {
        unsigned size = t == 0xdc ? 2u : 4u;
        if (!mp_take(c, size, &at)) return HIL_ERR_MSGPACK;
        o->kind = MP_ARRAY;
        n = be_read(at, size);
        goto array;
    }
    case 0xde: case 0xdf: {
        unsigned size = t == 0xde ? 2u : 4u;
        if (!mp_take(c, size, &at)) return HIL_ERR_MSGPACK;
        o->kind = MP_MAP;
        n = be_read(at, size);
        goto map;
    }
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
        return HIL_ERR_MSGPACK; /* fixext: 1 to 16 bytes of data, more than the 0 allowed */
    case 0xc7: case 0xc8: case 0xc9: {
        unsigned size = 1u << (t - 0xc7);
        const uint8_t *type_at;
        if (!mp_take(c, size, &at)) return HIL_ERR_MSGPACK;
        n = be_read(at, size);
        if (n > 0) return HIL_ERR_MSGPACK; /* no extension data in this protocol */
        if (!mp_take(c, 1, &type_at)) return HIL_ERR_MSGPACK;
        /* Negative types are reserved (-1, the timestamp, cannot be empty): malformed, as hil sees it. */
        if (type_at[0] & 0x80u) return HIL_ERR_MSGPACK;
        o->kind = MP_EXT;
        return HIL_OK;
    }
    default:
        return HIL_ERR_MSGPACK; /* 0xc1: never used */
    }
map:
    if (n > 0) return HIL_ERR_MSGPACK; /* no maps in this protocol */
    o->len = 0;
    return HIL_OK;
array:
    if (n > HIL_MAX_ARRAY) return HIL_ERR_MSGPACK;
    o->len = (uint32_t)n;
    return HIL_OK;
str:
    if (n > MP_MAX_STR) return HIL_ERR_MSGPACK;
    if (!mp_take(c, (size_t)n, &at)) return HIL_ERR_MSGPACK;
    if (!utf8_valid(at, (size_t)n)) return HIL_ERR_MSGPACK;
    o->len = (uint32_t)n;
    o->data = at;
    return HIL_OK;
}

/* The whole payload must be exactly one well-formed object. Iterative: a count of the
 * elements still to read replaces a stack. */
static hil_error mp_validate(const uint8_t *payload, size_t len)
{
    mp_cursor c;
    mp_obj o;
    size_t pending = 1;
    c.p = payload;
    c.len = len;
    c.pos = 0;
    while (pending > 0) {
        hil_error e = mp_next(&c, &o);
        if (e != HIL_OK) return e;
        pending--;
        if (o.kind == MP_ARRAY) pending += o.len;
        /* maps are empty here, so add nothing */
    }
    return c.pos == len ? HIL_OK : HIL_ERR_MSGPACK;
}

/* Typed readers over a validated payload: a wrong type or range is a message error. */

static hil_error rd_uint(mp_cursor *c, uint64_t limit, uint32_t *out)
{
    mp_obj o;
    if (mp_next(c, &o) != HIL_OK) return HIL_ERR_MSGPACK;
    if (o.kind != MP_UINT || o.u >= limit) return HIL_ERR_MESSAGE;
    *out = (uint32_t)o.u;
    return HIL_OK;
}

static hil_error rd_float(mp_cursor *c, double *out)
{
    mp_obj o;
    if (mp_next(c, &o) != HIL_OK) return HIL_ERR_MSGPACK;
    if (o.kind != MP_FLOAT || !f32_finite(o.f)) return HIL_ERR_MESSAGE;
    *out = o.f;
    return HIL_OK;
}

static hil_error rd_float64(mp_cursor *c, double *out)
{
    mp_obj o;
    if (mp_next(c, &o) != HIL_OK) return HIL_ERR_MSGPACK;
    if (o.kind != MP_FLOAT || !f64_finite(o.f)) return HIL_ERR_MESSAGE;
    *out = o.f;
    return HIL_OK;
}

static hil_error rd_number(mp_cursor *c, double *out)
{
    mp_obj o;
    if (mp_next(c, &o) != HIL_OK) return HIL_ERR_MSGPACK;
    if (o.kind == MP_FLOAT && f32_finite(o.f)) *out = o.f;
    else if (o.kind == MP_UINT) *out = (double)o.u;
    else if (o.kind == MP_NINT) *out = (double)o.i;
    else return HIL_ERR_MESSAGE;
    return HIL_OK;
}

static hil_error rd_str(mp_cursor *c, hil_str *out)
{
    mp_obj o;
    if (mp_next(c, &o) != HIL_OK) return HIL_ERR_MSGPACK;
    if (o.kind != MP_STR || o.len > HIL_MAX_TEXT) return HIL_ERR_MESSAGE;
    if (o.len) memcpy(out->text, o.data, o.len);
    out->text[o.len] = '\0';
    out->len = (uint16_t)o.len;
    return HIL_OK;
}

static hil_error rd_array(mp_cursor *c, uint32_t *count)
{
    mp_obj o;
    if (mp_next(c, &o) != HIL_OK) return HIL_ERR_MSGPACK;
    if (o.kind != MP_ARRAY) return HIL_ERR_MESSAGE;
    *count = o.len;
    return HIL_OK;
}

static hil_error rd_floats(mp_cursor *c, double *values, uint32_t *count)
{
    uint32_t n, k;
    hil_error e = rd_array(c, &n);
    if (e != HIL_OK) return e;
    /* n <= HIL_MAX_ARRAY == HIL_MAX_VALUES: checked by mp_next */
    for (k = 0; k < n; k++) {
        e = rd_float(c, &values[k]);
        if (e != HIL_OK) return e;
    }
    *count = n;
    return HIL_OK;
}

#define TRY(expr) do { hil_error try_e_ = (expr); if (try_e_ != HIL_OK) return try_e_; } while (0)

/* Elements of each message type; HELLO has 9, or 10 with a firmware's `params`. */
static const uint8_t arity[9] = {0, 9, 5, 4, 3, 5, 5, 7, 4};

hil_error hil_parse_payload(const uint8_t *payload, size_t len, hil_message *msg)
{
    mp_cursor c;
    mp_obj o;
    uint32_t n, type;
    TRY(mp_validate(payload, len));
    c.p = payload;
    c.len = len;
    c.pos = 0;
    TRY(rd_array(&c, &n));
    if (n == 0) return HIL_ERR_MESSAGE;
    if (mp_next(&c, &o) != HIL_OK) return HIL_ERR_MSGPACK;
    if (o.kind != MP_UINT || o.u < HIL_HELLO || o.u > HIL_PARAM_ACK) return HIL_ERR_MESSAGE;
    type = (uint32_t)o.u;
    if (n != arity[type] && !(type == HIL_HELLO && n == 10)) return HIL_ERR_MESSAGE;
    msg->type = type;
    TRY(rd_uint(&c, (uint64_t)1 << 32, &msg->seq));
    TRY(rd_uint(&c, (uint64_t)1 << 32, &msg->tick));
    switch (type) {
    case HIL_HELLO: {
        hil_hello *h = &msg->u.hello;
        uint32_t count, k;
        TRY(rd_uint(&c, (uint64_t)1 << 32, &h->version));
        TRY(rd_str(&c, &h->role));
        TRY(rd_str(&c, &h->vehicle));
        TRY(rd_uint(&c, HIL_MAX_VALUES + 1u, &h->actuators));
        TRY(rd_uint(&c, (uint64_t)1 << 32, &h->tick_rate_hz));
        TRY(rd_array(&c, &count));
        if (count > HIL_MAX_SENSORS) return HIL_ERR_MESSAGE;
        for (k = 0; k < count; k++) {
            uint32_t entry;
            TRY(rd_array(&c, &entry));
            if (entry != 3) return HIL_ERR_MESSAGE;
            TRY(rd_str(&c, &h->sensors[k].name));
            TRY(rd_uint(&c, HIL_MAX_VALUES + 1u, &h->sensors[k].fields));
            TRY(rd_number(&c, &h->sensors[k].rate_hz));
        }
        h->sensor_count = count;
        if (n == 10) {
            TRY(rd_str(&c, &h->params));
        } else {
            h->params.len = 0;
            h->params.text[0] = '\0';
        }
        break;
    }
    case HIL_PARAM: {
        hil_param *p = &msg->u.param;
        uint32_t k;
        TRY(rd_uint(&c, (uint64_t)1 << 32, &p->index));
        TRY(rd_uint(&c, (uint64_t)1 << 32, &p->count));
        if (p->count == 0 || p->index >= p->count) return HIL_ERR_MESSAGE;
        TRY(rd_str(&c, &p->name));
        TRY(rd_array(&c, &p->value_count));
        if (p->value_count > HIL_MAX_PARAM_VALUES) return HIL_ERR_MESSAGE;
        for (k = 0; k < p->value_count; k++) TRY(rd_float64(&c, &p->values[k]));
        break;
    }
    case HIL_PARAM_ACK:
        TRY(rd_uint(&c, (uint64_t)1 << 32, &msg->u.param_ack.index));
        break;
    case HIL_SENSORS:
        TRY(rd_uint(&c, (uint64_t)1 << 32, &msg->u.sensors.fresh));
        TRY(rd_floats(&c, msg->u.sensors.values, &msg->u.sensors.count));
        break;
    case HIL_ACTUATORS:
        TRY(rd_floats(&c, msg->u.actuators.values, &msg->u.actuators.count));
        break;
    case HIL_HEARTBEAT:
        break;
    case HIL_STATUS:
        TRY(rd_uint(&c, 5u, &msg->u.status.severity));
        TRY(rd_str(&c, &msg->u.status.text));
        break;
    case HIL_GOODBYE:
        TRY(rd_uint(&c, (uint64_t)1 << 32, &msg->u.goodbye.code));
        TRY(rd_str(&c, &msg->u.goodbye.reason));
        break;
    default:
        return HIL_ERR_MESSAGE;
    }
    return HIL_OK;
}

hil_error hil_decode_frame(uint8_t *frame, size_t len, hil_message *msg)
{
    size_t decoded;
    uint32_t received;
    hil_error e;
    if (len > HIL_MAX_FRAME) return HIL_ERR_OVERSIZE;
    e = hil_cobs_decode(frame, len, frame, len, &decoded);
    if (e != HIL_OK) return e;
    if (decoded < 5) return HIL_ERR_COBS; /* at least a 1-byte payload and the CRC */
    decoded -= 4;
    received = (uint32_t)frame[decoded] | (uint32_t)frame[decoded + 1] << 8 | (uint32_t)frame[decoded + 2] << 16 |
               (uint32_t)frame[decoded + 3] << 24;
    if (received != hil_crc32(frame, decoded)) return HIL_ERR_CRC;
    return hil_parse_payload(frame, decoded, msg);
}

/* ---- streaming reader ------------------------------------------------------------------------------ */

void hil_reader_init(hil_reader *reader)
{
    memset(reader, 0, sizeof *reader);
}

void hil_reader_reset(hil_reader *reader)
{
    reader->length = 0;
    reader->discarding = 0;
}

int hil_reader_push(hil_reader *reader, uint8_t byte, hil_message *msg, hil_error *error)
{
    hil_error e;
    size_t length;
    if (byte != 0) {
        if (reader->discarding) {
            reader->counters.garbage_bytes++;
            return HIL_READER_NONE;
        }
        if (reader->length >= HIL_MAX_FRAME) {
            reader->counters.errors[HIL_ERR_OVERSIZE]++;
            reader->counters.resyncs++;
            reader->counters.garbage_bytes += (uint32_t)reader->length + 1u;
            reader->length = 0;
            reader->discarding = 1;
            if (error) *error = HIL_ERR_OVERSIZE;
            return HIL_READER_DROPPED;
        }
        reader->buffer[reader->length++] = byte;
        return HIL_READER_NONE;
    }
    if (reader->discarding) { /* the delimiter that ends an oversize run */
        reader->discarding = 0;
        return HIL_READER_NONE;
    }
    if (reader->length == 0) return HIL_READER_NONE; /* an empty frame: a flush, ignored */
    length = reader->length;
    reader->length = 0;
    e = hil_decode_frame(reader->buffer, length, msg);
    if (e == HIL_OK) {
        reader->counters.frames++;
        return HIL_READER_MESSAGE;
    }
    reader->counters.errors[e]++;
    reader->counters.resyncs++;
    reader->counters.garbage_bytes += (uint32_t)length + 1u;
    if (error) *error = e;
    return HIL_READER_DROPPED;
}

int hil_reader_feed(hil_reader *reader, const uint8_t *data, size_t len, size_t *consumed, hil_message *msg,
                    hil_error *error)
{
    size_t i;
    for (i = 0; i < len; i++) {
        int event = hil_reader_push(reader, data[i], msg, error);
        if (event != HIL_READER_NONE) {
            *consumed = i + 1;
            return event;
        }
    }
    *consumed = len;
    return HIL_READER_NONE;
}

/* ---- msgpack writing -------------------------------------------------------------------------------- */

typedef struct mp_writer {
    uint8_t *p;
    size_t cap;
    size_t len;
    int overflow;
} mp_writer;

static void wr_bytes(mp_writer *w, const uint8_t *data, size_t n)
{
    if (w->overflow || w->cap - w->len < n) {
        w->overflow = 1;
        return;
    }
    if (n) memcpy(w->p + w->len, data, n);
    w->len += n;
}

static void wr_byte(mp_writer *w, uint8_t b)
{
    wr_bytes(w, &b, 1);
}

static void wr_be(mp_writer *w, uint8_t tag, uint64_t v, unsigned size)
{
    uint8_t buf[9];
    unsigned k;
    buf[0] = tag;
    for (k = 0; k < size; k++) buf[1 + k] = (uint8_t)(v >> (8 * (size - 1 - k)));
    wr_bytes(w, buf, size + 1);
}

/* Unsigned integers in their shortest form, as msgpack-python writes them. */
static void wr_uint(mp_writer *w, uint64_t v)
{
    if (v <= 0x7f) wr_byte(w, (uint8_t)v);
    else if (v <= 0xff) wr_be(w, 0xcc, v, 1);
    else if (v <= 0xffff) wr_be(w, 0xcd, v, 2);
    else if (v <= 0xffffffffu) wr_be(w, 0xce, v, 4);
    else wr_be(w, 0xcf, v, 8);
}

static void wr_float(mp_writer *w, double v)
{
    float f = (float)v;
    uint32_t bits;
    if (!f32_finite(v)) { /* the wire has no NaN or infinity: the message cannot be written */
        w->overflow = 1;
        return;
    }
    memcpy(&bits, &f, sizeof bits);
    wr_be(w, 0xca, bits, 4);
}

static void wr_double(mp_writer *w, double v)
{
    uint64_t bits;
    if (!f64_finite(v)) {
        w->overflow = 1;
        return;
    }
    memcpy(&bits, &v, sizeof bits);
    wr_be(w, 0xcb, bits, 8);
}

static void wr_array(mp_writer *w, size_t n)
{
    if (n <= 15) wr_byte(w, (uint8_t)(0x90u | n));
    else wr_be(w, 0xdc, n, 2);
}

static void wr_str(mp_writer *w, const char *s, size_t n)
{
    if (n > HIL_MAX_TEXT) {
        w->overflow = 1;
        return;
    }
    if (n <= 31) wr_byte(w, (uint8_t)(0xa0u | n));
    else wr_be(w, 0xd9, n, 1);
    wr_bytes(w, (const uint8_t *)s, n);
}

static size_t c_strlen_capped(const char *s, size_t cap)
{
    size_t n = 0;
    while (n <= cap && s[n] != '\0') n++;
    return n; /* cap + 1 when longer than cap */
}

static void wr_header(mp_writer *w, size_t elements, uint32_t type, uint32_t seq, uint32_t tick)
{
    wr_array(w, elements);
    wr_uint(w, type);
    wr_uint(w, seq);
    wr_uint(w, tick);
}

static void wr_floats(mp_writer *w, const double *values, size_t count)
{
    size_t k;
    if (count > HIL_MAX_VALUES) {
        w->overflow = 1;
        return;
    }
    wr_array(w, count);
    for (k = 0; k < count; k++) wr_float(w, values[k]);
}

static void pack_hello(mp_writer *w, uint32_t seq, uint32_t tick, const hil_hello *h)
{
    uint32_t k;
    if (h->sensor_count > HIL_MAX_SENSORS) {
        w->overflow = 1;
        return;
    }
    wr_header(w, h->params.len > 0 ? 10 : 9, HIL_HELLO, seq, tick);
    wr_uint(w, h->version);
    wr_str(w, h->role.text, h->role.len);
    wr_str(w, h->vehicle.text, h->vehicle.len);
    wr_uint(w, h->actuators);
    wr_uint(w, h->tick_rate_hz);
    wr_array(w, h->sensor_count);
    for (k = 0; k < h->sensor_count; k++) {
        wr_array(w, 3);
        wr_str(w, h->sensors[k].name.text, h->sensors[k].name.len);
        wr_uint(w, h->sensors[k].fields);
        wr_float(w, h->sensors[k].rate_hz);
    }
    if (h->params.len > 0) wr_str(w, h->params.text, h->params.len);
}

/* Frame a packed payload: CRC, COBS, delimiter. */
static size_t finish_frame(uint8_t *payload, size_t len, uint8_t *out, size_t cap)
{
    uint32_t crc;
    size_t n;
    if (len > HIL_MAX_PAYLOAD || cap < 1) return 0;
    crc = hil_crc32(payload, len);
    payload[len] = (uint8_t)crc;
    payload[len + 1] = (uint8_t)(crc >> 8);
    payload[len + 2] = (uint8_t)(crc >> 16);
    payload[len + 3] = (uint8_t)(crc >> 24);
    n = hil_cobs_encode(payload, len + 4, out, cap - 1);
    if (n == 0) return 0;
    out[n] = 0;
    return n + 1;
}

#define FRAME_BEGIN(w, buf)                   \
    uint8_t buf[HIL_MAX_PAYLOAD + 4u];        \
    mp_writer w;                              \
    w.p = buf;                                \
    w.cap = HIL_MAX_PAYLOAD;                  \
    w.len = 0;                                \
    w.overflow = 0

#define FRAME_END(w, buf, out, cap) ((w).overflow ? 0 : finish_frame(buf, (w).len, out, cap))

size_t hil_encode_hello(uint8_t *out, size_t cap, uint32_t seq, const hil_hello *hello)
{
    FRAME_BEGIN(w, buf);
    pack_hello(&w, seq, 0, hello);
    return FRAME_END(w, buf, out, cap);
}

size_t hil_encode_sensors(uint8_t *out, size_t cap, uint32_t seq, uint32_t tick, uint32_t fresh,
                          const double *values, size_t count)
{
    FRAME_BEGIN(w, buf);
    wr_header(&w, 5, HIL_SENSORS, seq, tick);
    wr_uint(&w, fresh);
    wr_floats(&w, values, count);
    return FRAME_END(w, buf, out, cap);
}

size_t hil_encode_actuators(uint8_t *out, size_t cap, uint32_t seq, uint32_t tick, const double *values,
                            size_t count)
{
    FRAME_BEGIN(w, buf);
    wr_header(&w, 4, HIL_ACTUATORS, seq, tick);
    wr_floats(&w, values, count);
    return FRAME_END(w, buf, out, cap);
}

size_t hil_encode_heartbeat(uint8_t *out, size_t cap, uint32_t seq, uint32_t tick)
{
    FRAME_BEGIN(w, buf);
    wr_header(&w, 3, HIL_HEARTBEAT, seq, tick);
    return FRAME_END(w, buf, out, cap);
}

static size_t encode_text_message(uint8_t *out, size_t cap, uint32_t type, uint32_t seq, uint32_t tick,
                                  uint32_t number, const char *text, size_t len)
{
    FRAME_BEGIN(w, buf);
    wr_header(&w, 5, type, seq, tick);
    wr_uint(&w, number);
    wr_str(&w, text, len);
    return FRAME_END(w, buf, out, cap);
}

size_t hil_encode_status(uint8_t *out, size_t cap, uint32_t seq, uint32_t tick, uint32_t severity,
                         const char *text)
{
    if (severity > HIL_CRITICAL) return 0;
    return encode_text_message(out, cap, HIL_STATUS, seq, tick, severity, text, c_strlen_capped(text, HIL_MAX_TEXT));
}

size_t hil_encode_goodbye(uint8_t *out, size_t cap, uint32_t seq, uint32_t tick, uint32_t code,
                          const char *reason)
{
    return encode_text_message(out, cap, HIL_GOODBYE, seq, tick, code, reason,
                               c_strlen_capped(reason, HIL_MAX_TEXT));
}

size_t hil_encode_param_ack(uint8_t *out, size_t cap, uint32_t seq, uint32_t index)
{
    FRAME_BEGIN(w, buf);
    wr_header(&w, 4, HIL_PARAM_ACK, seq, 0);
    wr_uint(&w, index);
    return FRAME_END(w, buf, out, cap);
}

static void pack_message(mp_writer *w, const hil_message *msg)
{
    switch (msg->type) {
    case HIL_HELLO:
        pack_hello(w, msg->seq, msg->tick, &msg->u.hello);
        break;
    case HIL_SENSORS:
        wr_header(w, 5, HIL_SENSORS, msg->seq, msg->tick);
        wr_uint(w, msg->u.sensors.fresh);
        wr_floats(w, msg->u.sensors.values, msg->u.sensors.count);
        break;
    case HIL_ACTUATORS:
        wr_header(w, 4, HIL_ACTUATORS, msg->seq, msg->tick);
        wr_floats(w, msg->u.actuators.values, msg->u.actuators.count);
        break;
    case HIL_HEARTBEAT:
        wr_header(w, 3, HIL_HEARTBEAT, msg->seq, msg->tick);
        break;
    case HIL_STATUS:
        if (msg->u.status.severity > HIL_CRITICAL) w->overflow = 1;
        wr_header(w, 5, HIL_STATUS, msg->seq, msg->tick);
        wr_uint(w, msg->u.status.severity);
        wr_str(w, msg->u.status.text.text, msg->u.status.text.len);
        break;
    case HIL_GOODBYE:
        wr_header(w, 5, HIL_GOODBYE, msg->seq, msg->tick);
        wr_uint(w, msg->u.goodbye.code);
        wr_str(w, msg->u.goodbye.reason.text, msg->u.goodbye.reason.len);
        break;
    case HIL_PARAM: {
        uint32_t k;
        const hil_param *p = &msg->u.param;
        if (p->value_count > HIL_MAX_PARAM_VALUES || p->count == 0 || p->index >= p->count) {
            w->overflow = 1;
            break;
        }
        wr_header(w, 7, HIL_PARAM, msg->seq, msg->tick);
        wr_uint(w, p->index);
        wr_uint(w, p->count);
        wr_str(w, p->name.text, p->name.len);
        wr_array(w, p->value_count);
        for (k = 0; k < p->value_count; k++) wr_double(w, p->values[k]);
        break;
    }
    case HIL_PARAM_ACK:
        wr_header(w, 4, HIL_PARAM_ACK, msg->seq, msg->tick);
        wr_uint(w, msg->u.param_ack.index);
        break;
    default:
        w->overflow = 1;
    }
}

size_t hil_pack(uint8_t *out, size_t cap, const hil_message *msg)
{
    mp_writer w;
    w.p = out;
    w.cap = cap < HIL_MAX_PAYLOAD ? cap : HIL_MAX_PAYLOAD;
    w.len = 0;
    w.overflow = 0;
    pack_message(&w, msg);
    return w.overflow ? 0 : w.len;
}

size_t hil_encode(uint8_t *out, size_t cap, const hil_message *msg)
{
    FRAME_BEGIN(w, buf);
    pack_message(&w, msg);
    return FRAME_END(w, buf, out, cap);
}

int hil_str_set(hil_str *str, const char *text)
{
    size_t n = c_strlen_capped(text, HIL_MAX_TEXT);
    if (n > HIL_MAX_TEXT) return 0;
    memcpy(str->text, text, n);
    str->text[n] = '\0';
    str->len = (uint16_t)n;
    return 1;
}

int hil_str_equals(const hil_str *str, const char *text)
{
    size_t n = c_strlen_capped(text, HIL_MAX_TEXT);
    size_t k;
    if (n != str->len) return 0;
    for (k = 0; k < n; k++)
        if (str->text[k] != text[k]) return 0;
    return 1;
}

/* ---- sensor layout ---------------------------------------------------------------------------------- */

hil_layout_result hil_layout_map(hil_layout *layout, const hil_hello *hello, const hil_sensor_need *needs,
                                 size_t need_count, size_t *which)
{
    uint32_t i;
    size_t n;
    memset(layout, 0, sizeof *layout);
    if (need_count > HIL_MAX_SENSORS) return HIL_LAYOUT_TOO_MANY_NEEDS;
    layout->count = hello->sensor_count <= HIL_MAX_SENSORS ? hello->sensor_count : HIL_MAX_SENSORS;
    layout->need_count = (uint32_t)need_count;
    for (i = 0; i < layout->count; i++) {
        layout->fields[i] = hello->sensors[i].fields;
        layout->slot[i] = -1;
    }
    for (n = 0; n < need_count; n++) {
        int found = 0;
        for (i = 0; i < layout->count; i++) {
            if (!hil_str_equals(&hello->sensors[i].name, needs[n].name)) continue;
            if (hello->sensors[i].fields != needs[n].fields) {
                if (which) *which = n;
                return HIL_LAYOUT_FIELDS;
            }
            if (layout->slot[i] < 0) layout->slot[i] = (int32_t)n;
            found = 1;
            break;
        }
        if (!found) {
            if (which) *which = n;
            return HIL_LAYOUT_MISSING;
        }
    }
    return HIL_LAYOUT_OK;
}

int hil_unpack_sensors(const hil_layout *layout, const hil_sensors *msg, double *const *readings, int *fresh)
{
    uint32_t i, expected = 0, offset = 0, n;
    if (layout->count < 32u && (msg->fresh >> layout->count) != 0) return 0; /* a bit for no sensor */
    for (i = 0; i < layout->count; i++)
        if (msg->fresh >> i & 1u) expected += layout->fields[i];
    if (expected != msg->count) return 0;
    for (n = 0; n < layout->need_count; n++) fresh[n] = 0;
    for (i = 0; i < layout->count; i++) {
        if (!(msg->fresh >> i & 1u)) continue;
        if (layout->slot[i] >= 0) {
            memcpy(readings[layout->slot[i]], &msg->values[offset], layout->fields[i] * sizeof(double));
            fresh[layout->slot[i]] = 1;
        }
        offset += layout->fields[i];
    }
    return 1;
}
