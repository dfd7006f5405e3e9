/*
 * The lockstep exchange as an XLA FFI call, so that a compiled loop flies many ticks per call
 * from Python (hil/bridges/compiled_exchange.py builds, loads and drives it).
 *
 * One call per tick: encode the tick's SENSORS from its trace row (hil_proto, the same code a
 * board compiles in), send it, wait for the firmware's ACTUATORS for that tick and return the
 * command, clipped to [0, 1] as hil's session clips it. Only that common case is handled here.
 * Anything else stops the loop at this tick and hands it back to the Python session, which goes
 * on from there as if it had sent the frame itself:
 *
 *   - a datagram from another sender, a frame that is not the expected reply (another type or
 *     tick, a duplicate seq, the wrong number of values, a bad frame): over UDP it is left in
 *     the socket unread; over a byte stream the bytes read are handed back in `leftover`;
 *   - no reply before the timeout, a hang-up or a read error (over a byte stream, the bytes read
 *     of a frame not yet complete are handed back too);
 *   - a SENSORS that could not be encoded, or no descriptor to send on: hil sends it itself;
 *   - a send that failed: hil reports the error, as when its own send fails.
 *
 * Every tick's row goes straight into the run's trace as the physics gave it (the command column
 * holds the command flown into the tick: hil's record of the run puts each reply's command into
 * its tick's row from the next row, hil/record.py), and every frame sent and reply accepted into
 * a journal, with its CLOCK_MONOTONIC time (Python's perf_counter_ns), for the session to count
 * and record. The loop carries no rows itself: XLA runs a program on its thread pool once any
 * buffer exceeds 512 bytes, and that pool would compete with the firmware for the CPU.
 */
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <ctime>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "xla/ffi/api/ffi.h"

extern "C" {
#include "hil_proto.h"
}

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kWriteTimeoutNs = 1000000000;
constexpr uint32_t kLeftover = 4096;

enum Stop : int32_t {
    kReplied = 0,      // the reply came and was accepted: the loop goes on
    kOtherMessage = 1, // something else arrived first: the session reads it
    kSilent = 2,       // no reply before the timeout
    kUnsent = 3,       // the SENSORS was not sent: the session sends it
    kLineError = 4,    // reading failed or the line hung up: the session finds out why
    kPaused = 5,       // the reply came and was accepted, and the loop has run its time: hil records
    kSendFailed = 6,   // sending failed (errno in `error`): the session reports it
};

}  // namespace

extern "C" {

/* One exchanged tick. Mirrored by JOURNAL_ENTRY in compiled_exchange.py. */
typedef struct hil_exchange_entry {
    int64_t sent_ns;      /* CLOCK_MONOTONIC */
    int64_t received_ns;  /* 0: no reply accepted */
    uint32_t tick;
    uint32_t sent_length;     /* 0: not sent */
    uint32_t received_length; /* the bytes the reply took off the line, delimiter included */
    uint32_t padding;
    uint8_t sent[HIL_FRAME_BUFFER];
    uint8_t received[HIL_FRAME_BUFFER];
} hil_exchange_entry;

/* Everything a run's exchange needs. Mirrored by the Context structure in compiled_exchange.py. */
typedef struct hil_exchange_context {
    int32_t fd;                /* -1: send nothing, hand the tick back unsent */
    int32_t datagram;          /* 1: UDP, one frame per datagram; 0: a byte stream */
    uint32_t peer_address;     /* UDP: the peer that completed HELLO, IPv4 in network order */
    uint32_t peer_port;        /* host order */
    int64_t timeout_ns;        /* how long to wait for a reply before handing the tick back */
    int64_t spin_ns;           /* how long to poll without sleeping after sending, as hil's links do */
    int64_t pause_ns;          /* CLOCK_MONOTONIC: after a reply from then on, the loop pauses */
    uint32_t sensor_count;     /* hil's sensors, in HELLO order: the bits of `fresh` */
    uint32_t fresh_offset;     /* where their freshness flags lie in a trace row */
    uint32_t reading_offset[HIL_MAX_SENSORS];
    uint32_t reading_size[HIL_MAX_SENSORS];
    uint32_t row_width;        /* values in a trace row */
    double *rows;              /* the trace from the loop's first tick on: each call writes its tick's row */
    uint32_t actuators;        /* values an ACTUATORS must carry */
    uint32_t seq;              /* the next SENSORS's seq; advanced here */
    uint32_t last_seq;         /* seq of the last frame received: a repeat is a duplicate */
    int32_t has_last_seq;
    hil_exchange_entry *journal;
    uint32_t capacity;         /* entries the journal holds */
    uint32_t entries;          /* entries written; hil resets it before each loop */
    int32_t error;             /* errno of a failed send */
    uint32_t leftover_length;  /* byte stream: bytes read but not accepted, for the session's reader */
    uint8_t leftover[kLeftover];
} hil_exchange_context;

/* sizeof both structures, so that their Python mirrors can check themselves. */
void hil_exchange_sizes(int64_t *sizes)
{
    sizes[0] = (int64_t)sizeof(hil_exchange_context);
    sizes[1] = (int64_t)sizeof(hil_exchange_entry);
}

}  // extern "C"

namespace {

int64_t Now()
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Spinning pays only while hil has a CPU to itself: as in bridges/link.py, once a wait finds this
 * thread preempted (a spin iteration took kPreemptedNs, or the kernel counted an involuntary
 * context switch since the last wait), waits sleep in poll at once for kContendedNs, so that the
 * firmware gets the CPU instead of a spinning hil. */
constexpr int64_t kPreemptedNs = 100000;
constexpr int64_t kContendedNs = 50000000;

struct CpuWatch {
    int64_t contended_until = 0;
    long switches = -1;  // involuntary context switches of this thread at the last wait
};
thread_local CpuWatch cpu;

/* When the spin of a wait for a frame sent at `sent_ns` ends: `spin_ns` later, or at once while the
 * CPU is contended. */
int64_t SpinUntil(int64_t sent_ns, int64_t spin_ns)
{
    int64_t now = Now();
    struct rusage usage;
    if (getrusage(RUSAGE_THREAD, &usage) == 0 && usage.ru_nivcsw != cpu.switches) {
        if (cpu.switches >= 0) cpu.contended_until = now + kContendedNs;
        cpu.switches = usage.ru_nivcsw;
    }
    return now < cpu.contended_until ? now : sent_ns + spin_ns;
}

/* Wait until fd is readable (true) or the deadline passes (false): spin until *spin_until_ns
 * (cut short when an iteration finds the thread was preempted; *last_ns is the previous one),
 * then sleep in poll. */
bool Wait(int fd, int64_t *spin_until_ns, int64_t deadline_ns, int64_t *last_ns, bool *woken)
{
    int64_t now = Now();
    if (now < *spin_until_ns && now - *last_ns > kPreemptedNs) {
        cpu.contended_until = now + kContendedNs;
        *spin_until_ns = now;
    }
    if (now < *spin_until_ns) {
        *last_ns = now;
        *woken = false;
        return now < deadline_ns;
    }
    if (now >= deadline_ns) return false;
    struct pollfd p = {fd, POLLIN, 0};
    int64_t wait_ms = (deadline_ns - now + 999999) / 1000000;
    int ready = poll(&p, 1, wait_ms > 1000 ? 1000 : (int)wait_ms);
    *woken = ready > 0;
    return true;
}

/* Put the frame on the line; false with c->error set when that fails (a byte stream that takes
 * nothing for a second has timed out). */
bool Send(hil_exchange_context *c, const uint8_t *frame, size_t length)
{
    if (c->datagram) {
        struct sockaddr_in peer;
        memset(&peer, 0, sizeof peer);
        peer.sin_family = AF_INET;
        peer.sin_port = htons((uint16_t)c->peer_port);
        peer.sin_addr.s_addr = c->peer_address;
        if (sendto(c->fd, frame, length, 0, (struct sockaddr *)&peer, sizeof peer) == (ssize_t)length) return true;
        c->error = errno;
        return false;
    }
    int64_t deadline = Now() + kWriteTimeoutNs;
    size_t done = 0;
    while (done < length) {
        ssize_t n = write(c->fd, frame + done, length - done);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            c->error = errno;
            return false;
        }
        if (Now() >= deadline) {
            c->error = ETIMEDOUT;
            return false;
        }
        struct pollfd p = {c->fd, POLLOUT, 0};
        poll(&p, 1, 10);
    }
    return true;
}

/* The reply hil waits for: an ACTUATORS for `tick`, with the agreed number of values, not a duplicate. */
bool Expected(const hil_exchange_context *c, const hil_message *msg, uint32_t tick)
{
    return msg->type == HIL_ACTUATORS && msg->tick == tick && msg->u.actuators.count == c->actuators &&
           !(c->has_last_seq && msg->seq == c->last_seq);
}

/* UDP: peek at the next datagram; 1 accepted (and consumed), 0 none yet, -1 hand back. */
int ReceiveDatagram(hil_exchange_context *c, hil_exchange_entry *entry, hil_message *msg)
{
    struct sockaddr_in sender;
    socklen_t sender_length = sizeof sender;
    ssize_t n = recvfrom(c->fd, entry->received, sizeof entry->received, MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC,
                         (struct sockaddr *)&sender, &sender_length);
    if (n < 0) return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNREFUSED) ? 0 : -1;
    if (sender.sin_family != AF_INET || sender.sin_addr.s_addr != c->peer_address ||
        ntohs(sender.sin_port) != c->peer_port || n < 2 || (size_t)n > sizeof entry->received ||
        entry->received[n - 1] != 0)
        return -1;
    uint8_t frame[HIL_MAX_FRAME];  // decoding works in place: the journal keeps the bytes as they came
    memcpy(frame, entry->received, (size_t)n - 1);
    if (hil_decode_frame(frame, (size_t)n - 1, msg) != HIL_OK || !Expected(c, msg, entry->tick)) return -1;
    uint8_t discard;
    if (recv(c->fd, &discard, 1, MSG_DONTWAIT) < 0) return -1;
    entry->received_length = (uint32_t)n;
    return 1;
}

/* Byte stream: read what is there into `leftover` and through `reader`; 1 accepted, 0 not
 * complete yet, -1 hand back (all the bytes read are in leftover). */
int ReceiveStream(hil_exchange_context *c, hil_reader *reader, hil_exchange_entry *entry, hil_message *msg,
                  bool woken)
{
    if (c->leftover_length == kLeftover) return -1;
    uint8_t *fresh = c->leftover + c->leftover_length;
    ssize_t n = read(c->fd, fresh, kLeftover - c->leftover_length);
    if (n < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
    if (n == 0) return woken ? -1 : 0;  // readable yet empty: the line hung up
    c->leftover_length += (uint32_t)n;
    size_t consumed;
    int event = hil_reader_feed(reader, fresh, (size_t)n, &consumed, msg, nullptr);
    if (event == HIL_READER_NONE) return 0;
    if (event != HIL_READER_MESSAGE || consumed != (size_t)n || c->leftover_length > sizeof entry->received ||
        !Expected(c, msg, entry->tick))
        return -1;  // a bad frame, more than the reply, or not the reply: all of it goes to the session
    memcpy(entry->received, c->leftover, c->leftover_length);
    entry->received_length = c->leftover_length;
    c->leftover_length = 0;
    return 1;
}

ffi::Error Exchange(ffi::Buffer<ffi::F64> row, ffi::Buffer<ffi::S64> tick, ffi::Buffer<ffi::U64> context,
                    ffi::ResultBuffer<ffi::F64> command, ffi::ResultBuffer<ffi::S32> stop)
{
    hil_exchange_context *c = reinterpret_cast<hil_exchange_context *>(*context.typed_data());
    double *out = command->typed_data();
    for (uint32_t i = 0; i < c->actuators; i++) out[i] = 0.0;
    if (c->entries == c->capacity) return ffi::Error(ffi::ErrorCode::kOutOfRange, "hil exchange journal is full");
    hil_exchange_entry *entry = &c->journal[c->entries++];
    memset(entry, 0, offsetof(hil_exchange_entry, sent));
    entry->tick = (uint32_t)*tick.typed_data();
    c->leftover_length = 0;

    const double *values = row.typed_data();
    memcpy(c->rows + (size_t)(c->entries - 1) * c->row_width, values, sizeof(double) * c->row_width);
    double fresh_values[HIL_MAX_VALUES];
    size_t count = 0;
    uint32_t fresh = 0;
    for (uint32_t i = 0; i < c->sensor_count; i++) {
        if (values[c->fresh_offset + i] == 0.0) continue;
        if (count + c->reading_size[i] > HIL_MAX_VALUES) {
            count = HIL_MAX_VALUES + 1;
            break;
        }
        fresh |= 1u << i;
        for (uint32_t j = 0; j < c->reading_size[i]; j++) fresh_values[count++] = values[c->reading_offset[i] + j];
    }
    size_t length = count > HIL_MAX_VALUES ? 0
                                           : hil_encode_sensors(entry->sent, sizeof entry->sent, c->seq, entry->tick,
                                                                fresh, fresh_values, count);
    entry->sent_ns = Now();
    if (c->fd < 0 || length == 0) {
        *stop->typed_data() = kUnsent;
        return ffi::Error::Success();
    }
    if (!Send(c, entry->sent, length)) {
        *stop->typed_data() = kSendFailed;
        return ffi::Error::Success();
    }
    entry->sent_length = (uint32_t)length;
    c->seq = c->seq % 0xFFFFFFFFu + 1u;

    int64_t deadline = entry->sent_ns + c->timeout_ns;
    bool woken = false;
    hil_message msg;
    hil_reader reader;
    hil_reader_init(&reader);
    int32_t result = kSilent;
    int64_t spin_until = SpinUntil(entry->sent_ns, c->spin_ns), last = entry->sent_ns;
    while (Wait(c->fd, &spin_until, deadline, &last, &woken)) {
        int got = c->datagram ? ReceiveDatagram(c, entry, &msg) : ReceiveStream(c, &reader, entry, &msg, woken);
        if (got == 0) continue;
        if (got < 0) {
            result = c->datagram || c->leftover_length ? kOtherMessage : kLineError;
            break;
        }
        entry->received_ns = Now();
        c->last_seq = msg.seq;
        c->has_last_seq = 1;
        for (uint32_t i = 0; i < c->actuators; i++) {
            double v = msg.u.actuators.values[i];
            out[i] = v < 0.0 ? 0.0 : v > 1.0 ? 1.0 : v;  // finite: hil_proto.c refuses NaN on receipt
        }
        result = entry->received_ns >= c->pause_ns ? kPaused : kReplied;
        break;
    }
    *stop->typed_data() = result;
    return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(HilLockstepExchange, Exchange,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F64>>()  // the tick's trace row
                                  .Arg<ffi::Buffer<ffi::S64>>()  // the tick
                                  .Arg<ffi::Buffer<ffi::U64>>()  // the address of the run's context
                                  .Ret<ffi::Buffer<ffi::F64>>()  // the command, for the next tick
                                  .Ret<ffi::Buffer<ffi::S32>>()); // enum Stop
