/*
 * An emulated flight controller as a POSIX process speaking hil's native protocol
 * (docs/protocol.md, sections 6, 7 and 9) over UDP or a serial port:
 *
 *   hil_quad_pid --udp HOST:PORT [controller options] [--idle-timeout S] [-v]
 *   hil_quad_pid --port /dev/ttyACM0 [--baud 921600] [controller options] [--idle-timeout S] [-v]
 *   hil_quad_pid --pty [controller options] [--idle-timeout S] [-v]
 *
 * With --pty it is a board on a new pseudo-terminal: the first line on stdout is the terminal
 * hil opens (for example /dev/pts/3), a serial port with nothing in between. With --udp the
 * first line is "ready on udp HOST:PORT" once it is bound.
 *
 * It answers every HELLO with its own, replies to every SENSORS with ACTUATORS for the same
 * tick, reports news (phase changes) as STATUS and exits 0 on GOODBYE. Its parameters come
 * from hil in PARAM messages after HELLO (its HELLO asks for them), or, when the command line
 * gives any --param, from the command line alone.
 *
 * Exit status: 0 GOODBYE received; 1 fatal error (I/O, HELLO mismatch, signal); 2 bad
 * command line; 3 nothing received for --idle-timeout seconds. Every non-zero exit prints
 * one line to stderr: "<program>: <reason>".
 */
#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700 /* posix_openpt, grantpt, unlockpt, ptsname */
#define _DEFAULT_SOURCE 1
#define _DARWIN_C_SOURCE 1

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "hil_firmware.h"
#include "hil_proto.h"

#define EXIT_GOODBYE 0
#define EXIT_FATAL 1
#define EXIT_USAGE 2
#define EXIT_IDLE 3

#define HEARTBEAT_INTERVAL 0.2   /* s of silence before a HEARTBEAT */
/* s after our last frame during which the link is polled without sleeping, while frames come
 * at most this far apart: in lockstep the next one comes within tens of µs, and waking from a
 * sleep costs as much again; paced at 1 kHz they are a millisecond apart, and it would only
 * burn a core. */
#define BUSY_POLL_WINDOW 0.0005
/* Busy polling pays only while the firmware has a CPU to itself: on a loaded machine it takes the
 * CPU hil needs to send the next frame. As hil's own waits do (bridges/link.py), once a poll finds
 * the process preempted (PREEMPTED s since the last poll, or an involuntary context switch), the
 * firmware sleeps in poll for CONTENDED s. Both are less eager than hil's: measured on two cores,
 * they keep the quiet machine's lockstep speed and double or triple it under two CPU-bound loads. */
#define PREEMPTED 0.0005
#define CONTENDED 0.005
#define SERIAL_WRITE_TIMEOUT_MS 1000
#define DATAGRAM_BUFFER 2048

static const hil_firmware *fw = &hil_firmware_this;

/* True while the process has lately been kept off its CPU; `*last_poll` is when the previous busy
 * poll ran (0: the last wait slept). */
static int contended(double t, double *last_poll)
{
    static double contended_until;
    static long switches = -1;
    struct rusage usage;
    if (getrusage(RUSAGE_SELF, &usage) == 0 && usage.ru_nivcsw != switches) {
        if (switches >= 0) contended_until = t + CONTENDED;
        switches = usage.ru_nivcsw;
    }
    if (*last_poll > 0 && t - *last_poll > PREEMPTED) contended_until = t + CONTENDED;
    *last_poll = t < contended_until ? 0 : t;
    return t < contended_until;
}

/* ---- messages to the user ---------------------------------------------------------------------- */

static int verbose;

static void say(const char *format, ...)
{
    va_list args;
    fprintf(stderr, "%s: ", fw->program);
    va_start(args, format);
    vfprintf(stderr, format, args);
    va_end(args);
    fputc('\n', stderr);
}

#define note(...) do { if (verbose) say(__VA_ARGS__); } while (0)

#if defined(__GNUC__)
#define NORETURN __attribute__((noreturn))
#else
#define NORETURN
#endif

static NORETURN void usage_error(const char *format, ...)
{
    va_list args;
    fprintf(stderr, "%s: ", fw->program);
    va_start(args, format);
    vfprintf(stderr, format, args);
    va_end(args);
    fprintf(stderr, " (see --help)\n");
    exit(EXIT_USAGE);
}

static void print_help(void)
{
    printf("usage: %s (--udp HOST:PORT | --port DEVICE [--baud N] | --pty) [options]\n\n"
           "An emulated flight controller speaking hil's native protocol (docs/protocol.md).\n\n"
           "  --udp HOST:PORT                bind here; serve the sender of the first HELLO from a hil,\n"
           "                                 ignore (and count) every other sender, and exit (status 1)\n"
           "                                 if that HELLO does not agree\n"
           "  --port DEVICE                  a serial port (opened raw, 8N1, no flow control)\n"
           "  --baud N                       its baud rate (default 921600)\n"
           "  --pty                          a new pseudo-terminal; prints the device hil opens\n"
           "  --idle-timeout S               exit with status 3 after S seconds without a frame\n"
           "                                 (default 10; 0: never)\n"
           "  -v, --verbose                  report the session on stderr\n\n"
           "Without --param its HELLO asks hil for parameter set '%s' (PARAM messages); with any\n"
           "--param it takes them from the command line alone:\n"
           "%s\n"
           "Exit status: 0 GOODBYE received, 1 fatal error, 2 bad command line, 3 idle timeout.\n",
           fw->program, fw->parameter_set, fw->usage);
}

/* ---- time and signals --------------------------------------------------------------------------- */

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static volatile sig_atomic_t stop_signal;

static void on_signal(int signal_number)
{
    stop_signal = signal_number;
}

static void install_signals(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0; /* no SA_RESTART: poll returns EINTR */
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGHUP, &action, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* ---- the link ------------------------------------------------------------------------------------ */

typedef struct link_state {
    int fd;
    int is_udp;
    char where[300];                 /* "udp 127.0.0.1:9000", "/dev/ttyACM0 at 921600" */
    struct sockaddr_storage peer;    /* UDP: the address of the first valid HELLO */
    socklen_t peer_len;
    int have_peer;
} link_state;

static link_state link_;

static int same_address(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family) return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)(const void *)a;
        const struct sockaddr_in *y = (const struct sockaddr_in *)(const void *)b;
        return x->sin_port == y->sin_port && memcmp(&x->sin_addr, &y->sin_addr, sizeof x->sin_addr) == 0;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)(const void *)a;
        const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)(const void *)b;
        return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0 &&
               x->sin6_scope_id == y->sin6_scope_id;
    }
    return 0;
}

static void describe_address(const struct sockaddr_storage *address, socklen_t length, char *out, size_t size)
{
    char host[NI_MAXHOST], port[NI_MAXSERV];
    if (getnameinfo((const struct sockaddr *)address, length, host, sizeof host, port, sizeof port,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(out, size, "(unknown address)");
        return;
    }
    snprintf(out, size, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port);
}

static void open_udp(const char *spec)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    const char *port;
    size_t host_len;
    struct addrinfo hints, *found, *ai;
    int status, fd = -1, last_errno = 0;
    struct sockaddr_storage bound;
    socklen_t bound_len = sizeof bound;
    char bound_text[300];

    if (colon == NULL || colon == spec || colon[1] == '\0') usage_error("--udp '%s': expected HOST:PORT", spec);
    port = colon + 1;
    if (strspn(port, "0123456789") != strlen(port) || atol(port) > 65535)
        usage_error("--udp '%s': the port must be a number from 0 to 65535", spec);
    host_len = (size_t)(colon - spec);
    if (host_len >= sizeof host) usage_error("--udp '%s': host name too long", spec);
    memcpy(host, spec, host_len);
    host[host_len] = '\0';
    if (host_len >= 2 && host[0] == '[' && host[host_len - 1] == ']') { /* [::1]:9000 */
        memmove(host, host + 1, host_len - 2);
        host[host_len - 2] = '\0';
    }

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    status = getaddrinfo(host, port, &hints, &found);
    if (status != 0) {
        say("cannot resolve --udp %s: %s", spec, gai_strerror(status));
        exit(EXIT_FATAL);
    }
    for (ai = found; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
        last_errno = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(found);
    if (fd < 0) {
        say("cannot bind UDP %s: %s", spec, strerror(last_errno));
        exit(EXIT_FATAL);
    }
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
        say("cannot make the UDP socket non-blocking: %s", strerror(errno));
        exit(EXIT_FATAL);
    }
    getsockname(fd, (struct sockaddr *)&bound, &bound_len);
    describe_address(&bound, bound_len, bound_text, sizeof bound_text);
    snprintf(link_.where, sizeof link_.where, "udp %.200s", bound_text);
    link_.fd = fd;
    link_.is_udp = 1;
    /* hil counts its HELLO timeout from this line, not from exec */
    printf("ready on udp %s\n", bound_text);
    fflush(stdout);
}

typedef struct baud_rate {
    long rate;
    speed_t code;
} baud_rate;

static const baud_rate baud_rates[] = {
    {1200, B1200}, {2400, B2400}, {4800, B4800}, {9600, B9600}, {19200, B19200}, {38400, B38400},
#ifdef B57600
    {57600, B57600},
#endif
#ifdef B115200
    {115200, B115200},
#endif
#ifdef B230400
    {230400, B230400},
#endif
#ifdef B460800
    {460800, B460800},
#endif
#ifdef B500000
    {500000, B500000},
#endif
#ifdef B576000
    {576000, B576000},
#endif
#ifdef B921600
    {921600, B921600},
#endif
#ifdef B1000000
    {1000000, B1000000},
#endif
#ifdef B1500000
    {1500000, B1500000},
#endif
#ifdef B2000000
    {2000000, B2000000},
#endif
#ifdef B3000000
    {3000000, B3000000},
#endif
#ifdef B4000000
    {4000000, B4000000},
#endif
};

/* Raw: no line editing, echo, signals, translation or flow control; 8 data bits, no parity, 1 stop bit. */
static int make_raw(int fd, speed_t speed)
{
    struct termios t;
    if (tcgetattr(fd, &t) != 0) return -1;
    t.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON | IXOFF);
#ifdef IXANY
    t.c_iflag &= ~(tcflag_t)IXANY;
#endif
    t.c_oflag &= ~(tcflag_t)OPOST;
    t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    t.c_cflag &= ~(tcflag_t)(CSIZE | PARENB | CSTOPB);
    t.c_cflag |= CS8 | CLOCAL | CREAD;
#ifdef CRTSCTS
    t.c_cflag &= ~(tcflag_t)CRTSCTS;
#endif
    t.c_cc[VMIN] = 0;
    t.c_cc[VTIME] = 0;
    if (cfsetispeed(&t, speed) != 0 || cfsetospeed(&t, speed) != 0) return -1;
    return tcsetattr(fd, TCSANOW, &t);
}

static void open_serial(const char *path, long baud)
{
    speed_t code = 0;
    size_t k;
    int fd, found = 0;

    for (k = 0; k < sizeof baud_rates / sizeof baud_rates[0]; k++) {
        if (baud_rates[k].rate == baud) {
            code = baud_rates[k].code;
            found = 1;
        }
    }
    if (!found) usage_error("--baud %ld: not a rate this system supports (e.g. 115200, 230400, 460800, 921600)", baud);
    fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        say("cannot open serial port %s: %s", path, strerror(errno));
        exit(EXIT_FATAL);
    }
    if (!isatty(fd)) {
        say("cannot use %s as a serial port: it is not a terminal", path);
        exit(EXIT_FATAL);
    }
    if (make_raw(fd, code) != 0) {
        say("cannot set %s to %ld baud, raw 8N1: %s", path, baud, strerror(errno));
        exit(EXIT_FATAL);
    }
    tcflush(fd, TCIOFLUSH);
    snprintf(link_.where, sizeof link_.where, "%.250s at %ld baud", path, baud);
    link_.fd = fd;
    link_.is_udp = 0;
}

/* A new pseudo-terminal: the firmware holds its controlling side, hil opens the other as a
 * serial port. The firmware keeps the terminal side open too, so that the link does not read
 * as hung up before hil has opened it. */
static void open_pty(void)
{
    const char *name;
    int fd = posix_openpt(O_RDWR | O_NOCTTY), terminal;
    if (fd < 0 || grantpt(fd) != 0 || unlockpt(fd) != 0 || (name = ptsname(fd)) == NULL) {
        say("cannot create a pseudo-terminal: %s", strerror(errno));
        exit(EXIT_FATAL);
    }
    terminal = open(name, O_RDWR | O_NOCTTY);
    if (terminal < 0 || make_raw(terminal, B38400) != 0 ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
        say("cannot set up the pseudo-terminal %s: %s", name, strerror(errno));
        exit(EXIT_FATAL);
    }
    snprintf(link_.where, sizeof link_.where, "pty %.250s", name);
    link_.fd = fd;
    link_.is_udp = 0;
    printf("%s\n", name);
    fflush(stdout);
}

/* ---- session ------------------------------------------------------------------------------------ */

static struct {
    hil_sender sender;
    int have_last_seq;
    uint32_t last_seq;        /* hil's previous frame */
    int ask_parameters;       /* no --param: its HELLO asks hil for them */
    int accepted;             /* a HELLO has been accepted */
    int active;               /* ... and the parameters taken: SENSORS are answered */
    hil_param_intake intake;
    hil_layout layout;
    uint32_t tick_rate_hz;
    uint32_t latest_tick;
    double last_sent;
    double last_received;
    double arrival_gap;       /* s between the last two frames received */
    double readings[HIL_MAX_SENSORS][HIL_MAX_VALUES];
    double *reading_ptr[HIL_MAX_SENSORS];
    int fresh[HIL_MAX_SENSORS];
    /* counters */
    uint32_t duplicates, foreign, bad_sensors, before_hello, sensors_answered, not_sent;
} session;

static hil_reader reader;

/* Put one frame on the link; a fatal error ends the process. */
static void transmit(const uint8_t *frame, size_t length)
{
    if (length == 0) {
        session.not_sent++; /* over a protocol limit: cannot happen with what this program sends */
        return;
    }
    if (link_.is_udp) {
        if (!link_.have_peer) return;
        if (sendto(link_.fd, frame, length, 0, (const struct sockaddr *)&link_.peer, link_.peer_len) < 0) {
            /* An ICMP error from an earlier datagram, or a full buffer: a lost datagram, as on any network. */
            if (errno != ECONNREFUSED && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS &&
                errno != EINTR) {
                say("cannot send to hil on %s: %s", link_.where, strerror(errno));
                exit(EXIT_FATAL);
            }
            session.not_sent++;
        }
    } else {
        size_t done = 0;
        while (done < length) {
            ssize_t n = write(link_.fd, frame + done, length - done);
            if (n > 0) {
                done += (size_t)n;
            } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                struct pollfd p;
                p.fd = link_.fd;
                p.events = POLLOUT;
                p.revents = 0;
                if (poll(&p, 1, SERIAL_WRITE_TIMEOUT_MS) == 0) {
                    say("cannot write to %s: nothing drained for %d ms", link_.where, SERIAL_WRITE_TIMEOUT_MS);
                    exit(EXIT_FATAL);
                }
            } else if (n < 0 && errno == EINTR) {
                continue;
            } else {
                say("cannot write to %s: %s", link_.where, n < 0 ? strerror(errno) : "nothing written");
                exit(EXIT_FATAL);
            }
        }
    }
    session.last_sent = now();
}

static void print_counters(void)
{
    if (!verbose) return;
    say("frames %lu, sensors answered %lu, duplicates %lu, foreign %lu, bad sensors %lu, before HELLO %lu, "
        "errors: crc %lu cobs %lu msgpack %lu message %lu oversize %lu, garbage %lu B",
        (unsigned long)reader.counters.frames, (unsigned long)session.sensors_answered,
        (unsigned long)session.duplicates, (unsigned long)session.foreign, (unsigned long)session.bad_sensors,
        (unsigned long)session.before_hello, (unsigned long)reader.counters.errors[HIL_ERR_CRC],
        (unsigned long)reader.counters.errors[HIL_ERR_COBS], (unsigned long)reader.counters.errors[HIL_ERR_MSGPACK],
        (unsigned long)reader.counters.errors[HIL_ERR_MESSAGE],
        (unsigned long)reader.counters.errors[HIL_ERR_OVERSIZE], (unsigned long)reader.counters.garbage_bytes);
}

/* A HELLO hil's side cannot work with: say why on both ends and stop. */
static void refuse(uint32_t code, const char *reason)
{
    hil_send_goodbye(&session.sender, 0, code, reason);
    say("HELLO mismatch: %s", reason);
    print_counters();
    exit(EXIT_FATAL);
}

static void on_hello(const hil_hello *hello)
{
    char reason[HIL_MAX_TEXT + 1];
    uint32_t code;

    hil_send_hello(&session.sender, fw, session.ask_parameters); /* answer every HELLO, so that a lost one only costs a retry */
    if (!hil_firmware_accept(fw, hello, &session.layout, &code, reason, sizeof reason)) refuse(code, reason);
    /* A (new) session: start from the initial state, once the parameters are in. */
    session.accepted = 1;
    session.tick_rate_hz = hello->tick_rate_hz;
    memset(session.readings, 0, sizeof session.readings);
    memset(&session.intake, 0, sizeof session.intake);
    session.active = !session.ask_parameters;
    if (session.active) fw->reset();
    note("HELLO from hil on %s: %lu Hz, %lu sensors", link_.where, (unsigned long)hello->tick_rate_hz,
         (unsigned long)hello->sensor_count);
}

static void on_param(const hil_param *param)
{
    char reason[HIL_MAX_TEXT + 1];
    hil_param_event event;
    if (!session.accepted || !session.ask_parameters) {
        session.before_hello++; /* not asked for: nothing to take it into */
        return;
    }
    event = hil_firmware_answer_param(fw, &session.intake, param, &session.sender, reason, sizeof reason);
    if (event == HIL_PARAM_SET_COMPLETE) {
        session.active = 1;
        note("took %lu parameters from hil", (unsigned long)session.intake.count);
    } else if (event == HIL_PARAM_REFUSED) {
        say("parameter refused: %s", reason);
        print_counters();
        exit(EXIT_FATAL);
    }
}

static void on_sensors(const hil_message *msg)
{
    double out[HIL_MAX_VALUES];
    char text[HIL_MAX_TEXT + 1];
    uint32_t severity;
    if (!session.active) {
        session.before_hello++;
        return;
    }
    if (!hil_unpack_sensors(&session.layout, &msg->u.sensors, session.reading_ptr, session.fresh)) {
        session.bad_sensors++; /* values do not match the fresh mask: dropped */
        return;
    }
    fw->step(session.reading_ptr, session.fresh, (double)msg->tick / (double)session.tick_rate_hz, out);
    hil_send_actuators(&session.sender, msg->tick, out, fw->actuators);
    session.sensors_answered++;
    while (fw->report(text, sizeof text, &severity)) {
        note("tick %lu: %s", (unsigned long)msg->tick, text);
        hil_send_status(&session.sender, msg->tick, severity, text);
    }
}

/* Act on one decoded frame. `sender` is the datagram's source on UDP, else NULL. */
static void on_message(const hil_message *msg, const struct sockaddr_storage *sender, socklen_t sender_len)
{
    if (link_.is_udp && !link_.have_peer) {
        /* Before HELLO, only a HELLO from hil picks the peer; anything else is ignored. The peer
         * is answered, and kept only if its HELLO agrees: on a mismatch this program exits. From
         * then on every other sender is foreign. */
        if (msg->type != HIL_HELLO || !hil_str_equals(&msg->u.hello.role, "hil")) {
            session.before_hello++;
            return;
        }
        memcpy(&link_.peer, sender, sizeof link_.peer);
        link_.peer_len = sender_len;
        link_.have_peer = 1;
        if (verbose) {
            char text[300];
            describe_address(sender, sender_len, text, sizeof text);
            say("talking to hil at %s", text);
        }
    }
    if (msg->type != HIL_HELLO && session.have_last_seq && msg->seq == session.last_seq) {
        session.duplicates++;
        return;
    }
    session.have_last_seq = 1;
    session.last_seq = msg->seq;
    {
        double t = now();
        session.arrival_gap = t - session.last_received;
        session.last_received = t;
    }
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
        note("GOODBYE from hil at tick %lu: %s (code %lu)", (unsigned long)msg->tick, msg->u.goodbye.reason.text,
             (unsigned long)msg->u.goodbye.code);
        print_counters();
        exit(EXIT_GOODBYE);
    default:
        break; /* HEARTBEAT, STATUS, ACTUATORS: nothing to do */
    }
}

static void feed(const uint8_t *data, size_t length, const struct sockaddr_storage *sender, socklen_t sender_len)
{
    static hil_message msg;
    size_t offset = 0;
    while (offset < length) {
        size_t used;
        hil_error error;
        int event = hil_reader_feed(&reader, data + offset, length - offset, &used, &msg, &error);
        offset += used;
        if (event == HIL_READER_MESSAGE) on_message(&msg, sender, sender_len);
        else if (event == HIL_READER_DROPPED) note("dropped a frame: %s", hil_error_name(error));
    }
}

/* UDP: a datagram is one whole frame, its delimiter last (docs/protocol.md section 1). One that
 * is not (no delimiter, or more after the first) is dropped whole and counted, as hil drops it:
 * frames are never taken from the middle of a datagram. */
static void take_datagram(uint8_t *data, size_t length, const struct sockaddr_storage *sender, socklen_t sender_len)
{
    static hil_message msg;
    hil_error error = length > 0 && data[length - 1] == 0 ? hil_decode_frame(data, length - 1, &msg) : HIL_ERR_COBS;
    if (error == HIL_OK) {
        reader.counters.frames++;
        on_message(&msg, sender, sender_len);
        return;
    }
    reader.counters.errors[error]++;
    reader.counters.garbage_bytes += (uint32_t)length;
    note("dropped a datagram: %s", hil_error_name(error));
}

static void serve(double idle_timeout)
{
    static uint8_t buffer[DATAGRAM_BUFFER];
    double last_poll = 0; /* when the last busy poll ran; 0 after a wait that slept */
    size_t k;
    for (k = 0; k < HIL_MAX_SENSORS; k++) session.reading_ptr[k] = session.readings[k];
    hil_reader_init(&reader);
    hil_sender_init(&session.sender, transmit);
    fw->reset();
    session.last_received = session.last_sent = now();
    session.arrival_gap = HEARTBEAT_INTERVAL;
    note("waiting for hil on %s", link_.where);
    for (;;) {
        struct pollfd p;
        double t = now(), wait = 1.0;
        int can_heartbeat = link_.is_udp ? link_.have_peer : 1;
        int ready, busy;
        if (stop_signal) {
            char reason[64];
            snprintf(reason, sizeof reason, "firmware stopped by signal %d", (int)stop_signal);
            if (!link_.is_udp || link_.have_peer) hil_send_goodbye(&session.sender, session.latest_tick, HIL_GOODBYE_ERROR, reason);
            say("%s", reason);
            print_counters();
            exit(EXIT_FATAL);
        }
        if (idle_timeout > 0) {
            double left = session.last_received + idle_timeout - t;
            if (left <= 0) {
                char reason[HIL_MAX_TEXT + 1];
                snprintf(reason, sizeof reason, "firmware: nothing received for %g s", idle_timeout);
                if (session.active) hil_send_goodbye(&session.sender, session.latest_tick, HIL_GOODBYE_TIMEOUT, reason);
                say("nothing received for %g s on %s; exiting", idle_timeout, link_.where);
                print_counters();
                exit(EXIT_IDLE);
            }
            if (left < wait) wait = left;
        }
        if (can_heartbeat) {
            double left = session.last_sent + HEARTBEAT_INTERVAL - t;
            if (left <= 0) {
                hil_send_heartbeat(&session.sender, session.latest_tick);
                continue;
            }
            if (left < wait) wait = left;
        }
        p.fd = link_.fd;
        p.events = POLLIN;
        p.revents = 0;
        if (session.arrival_gap < BUSY_POLL_WINDOW && t - session.last_sent < BUSY_POLL_WINDOW) {
            busy = !contended(t, &last_poll);
        } else {
            busy = 0;
            last_poll = 0;
        }
        ready = poll(&p, 1, busy ? 0 : (int)(wait * 1000.0) + 1);
        if (ready < 0) {
            if (errno == EINTR) continue;
            say("poll on %s failed: %s", link_.where, strerror(errno));
            exit(EXIT_FATAL);
        }
        if (ready == 0) continue;
        if (link_.is_udp) {
            for (;;) {
                struct sockaddr_storage sender;
                socklen_t sender_len = sizeof sender;
                ssize_t n = recvfrom(link_.fd, buffer, sizeof buffer, 0, (struct sockaddr *)&sender, &sender_len);
                if (n < 0) {
                    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNREFUSED) break;
                    say("cannot receive on %s: %s", link_.where, strerror(errno));
                    exit(EXIT_FATAL);
                }
                if (link_.have_peer && !same_address(&sender, &link_.peer)) {
                    session.foreign++;
                    continue;
                }
                take_datagram(buffer, (size_t)n, &sender, sender_len);
            }
        } else {
            ssize_t n = read(link_.fd, buffer, sizeof buffer);
            if (n > 0) {
                feed(buffer, (size_t)n, NULL, 0);
            } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                say("cannot read from %s: %s", link_.where, strerror(errno));
                exit(EXIT_FATAL);
            } else if (p.revents & (POLLHUP | POLLERR | POLLNVAL)) {
                say("%s hung up", link_.where);
                exit(EXIT_FATAL);
            }
        }
    }
}

/* ---- command line -------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    const char *udp = NULL, *port = NULL;
    int pty = 0;
    long baud = 0; /* 0: not given, 921600 */
    double idle_timeout = 10.0;
    char err[512];
    int i, parameters_given = 0;

    for (i = 1; i < argc; i++) {
        char option[64];
        const char *arg = argv[i], *value = NULL, *equals;
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            print_help();
            return 0;
        }
        if (strcmp(arg, "-v") == 0 || strcmp(arg, "--verbose") == 0) {
            verbose = 1;
            continue;
        }
        if (strcmp(arg, "--pty") == 0) {
            pty = 1;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0) usage_error("unexpected argument '%s'", arg);
        /* --option=value or --option value */
        equals = strchr(arg, '=');
        if (equals != NULL) {
            size_t n = (size_t)(equals - arg);
            if (n >= sizeof option) usage_error("unknown option '%s'", arg);
            memcpy(option, arg, n);
            option[n] = '\0';
            value = equals + 1;
        } else {
            if (strlen(arg) >= sizeof option) usage_error("unknown option '%s'", arg);
            strcpy(option, arg);
        }
        if (strcmp(option, "--udp") != 0 && strcmp(option, "--port") != 0 && strcmp(option, "--baud") != 0 &&
            strcmp(option, "--idle-timeout") != 0 && strcmp(option, "--param") != 0)
            usage_error("unknown option '%s'", option);
        if (value == NULL) {
            if (i + 1 >= argc) usage_error("%s needs a value", option);
            value = argv[++i];
        }
        if (strcmp(option, "--udp") == 0) {
            udp = value;
        } else if (strcmp(option, "--port") == 0) {
            port = value;
        } else if (strcmp(option, "--baud") == 0) {
            char *end;
            errno = 0;
            baud = strtol(value, &end, 10);
            if (end == value || *end != '\0' || errno != 0 || baud <= 0) usage_error("--baud '%s': not a number", value);
        } else if (strcmp(option, "--idle-timeout") == 0) {
            char *end;
            idle_timeout = strtod(value, &end);
            if (end == value || *end != '\0' || !(idle_timeout >= 0.0))
                usage_error("--idle-timeout '%s': expected seconds, 0 or more", value);
        } else {
            if (!parameters_given) fw->clear();
            parameters_given = 1;
            if (!hil_firmware_param_text(fw, value, err, sizeof err)) usage_error("%s", err);
        }
    }
    if ((udp != NULL) + (port != NULL) + pty != 1) usage_error("give exactly one of --udp HOST:PORT, --port DEVICE and --pty");
    if (baud != 0 && port == NULL) usage_error("--baud goes with --port: a serial port's rate");
    if (baud == 0) baud = 921600;
    if (parameters_given && !fw->finish(err, sizeof err)) usage_error("%s", err);
    session.ask_parameters = !parameters_given;

    install_signals();
    if (udp) open_udp(udp);
    else if (port) open_serial(port, baud);
    else open_pty();
    serve(idle_timeout);
    return EXIT_FATAL;
}
