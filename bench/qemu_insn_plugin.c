/*
 * A QEMU TCG plugin (system emulation, one vCPU) that counts the guest instructions executed in
 * one function per call and between successive calls: bench/qemu_board.py loads it to measure
 * the quad_pid controller's step on the STM32F405 board image.
 *
 *   qemu-system-arm ... -plugin qemu_insn_plugin.so,entry=0x8001234,return=0x8004568,out=FILE[,skip=LO-HI...]
 *
 * entry: the function's first instruction (without the Thumb bit); return: the address after a
 * call of it (one return= per call site). out: a file that gets a line
 * "STEP TICK" per call, written as the call returns: STEP the instructions from its entry to its
 * return, less those in the skip ranges (interrupt handlers, which preempt it at random);
 * TICK every instruction from the previous call's entry to this one's (the whole loop round:
 * receive, decode, step, encode, send, interrupts), 0 for the first call.
 *
 * Counting whole translation blocks is exact: QEMU takes interrupts only between blocks, and a
 * block starts at every return address (a call ends the block before it).
 *
 * Only the six plugin API functions below are used; they are declared here, as QEMU 7.2's
 * qemu-plugin.h declares them (plugin API version 1), because Debian ships no header for them.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
typedef struct qemu_info_t qemu_info_t; /* not read */
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
void qemu_plugin_outs(const char *string);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

#define MAX_RANGES 8

/* One translated block: what its execution adds. Blocks are never freed (QEMU may run a block
 * after flushing its own record of it); a flight translates a few thousand. */
typedef struct block {
    uint64_t start;
    uint64_t insns;
    int skipped;         /* it lies in a skip range */
    int returned;        /* it starts at a return address */
} block;

static uint64_t entry, returns[MAX_RANGES], skip_lo[MAX_RANGES], skip_hi[MAX_RANGES];
static size_t return_count, skips;
static FILE *out;

static uint64_t total;        /* instructions so far */
static int inside;            /* between the entry and the return */
static uint64_t step, tick, entered_at;
static int entered_before;

static void executed(unsigned int vcpu, void *data)
{
    const block *b = data;
    (void)vcpu;
    if (b->start == entry && !inside) {
        inside = 1;
        step = 0;
        tick = entered_before ? total - entered_at : 0;
        entered_before = 1;
        entered_at = total;
    } else if (inside && b->returned) {
        inside = 0;
        fprintf(out, "%" PRIu64 " %" PRIu64 "\n", step, tick);
    }
    if (inside && !b->skipped) step += b->insns;
    total += b->insns;
}

static void translated(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb), k;
    block *b;
    (void)id;
    if (n == 0) return;
    b = malloc(sizeof *b);
    if (b == NULL) return; /* then this block goes uncounted: QEMU has bigger trouble */
    b->start = qemu_plugin_tb_vaddr(tb);
    b->insns = n;
    b->skipped = b->returned = 0;
    for (k = 0; k < return_count; k++) b->returned |= b->start == returns[k];
    for (k = 0; k < skips; k++) b->skipped |= b->start >= skip_lo[k] && b->start < skip_hi[k];
    qemu_plugin_register_vcpu_tb_exec_cb(tb, executed, QEMU_PLUGIN_CB_NO_REGS, b);
}

static void finished(qemu_plugin_id_t id, void *data)
{
    (void)id;
    (void)data;
    fclose(out);
}

static int fail(const char *why, const char *argument)
{
    char text[256];
    snprintf(text, sizeof text,
             "qemu_insn_plugin: %s: '%s' (give entry=ADDR,return=ADDR,out=FILE[,skip=LO-HI...])\n", why, argument);
    qemu_plugin_outs(text);
    return -1;
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                                               int argc, char **argv)
{
    const char *path = NULL;
    int k;
    (void)info;
    for (k = 0; k < argc; k++) {
        char *end;
        if (strncmp(argv[k], "entry=", 6) == 0) {
            entry = strtoull(argv[k] + 6, &end, 0);
            if (end == argv[k] + 6 || *end != '\0') return fail("not an address", argv[k]);
        } else if (strncmp(argv[k], "return=", 7) == 0) {
            if (return_count == MAX_RANGES) return fail("too many return addresses", argv[k]);
            returns[return_count] = strtoull(argv[k] + 7, &end, 0);
            if (end == argv[k] + 7 || *end != '\0') return fail("not an address", argv[k]);
            return_count++;
        } else if (strncmp(argv[k], "out=", 4) == 0) {
            path = argv[k] + 4;
        } else if (strncmp(argv[k], "skip=", 5) == 0) {
            if (skips == MAX_RANGES) return fail("too many skip ranges", argv[k]);
            skip_lo[skips] = strtoull(argv[k] + 5, &end, 0);
            if (end == argv[k] + 5 || *end != '-') return fail("not a range LO-HI", argv[k]);
            skip_hi[skips] = strtoull(end + 1, &end, 0);
            if (*end != '\0' || skip_hi[skips] <= skip_lo[skips]) return fail("not a range LO-HI", argv[k]);
            skips++;
        } else {
            return fail("unknown argument", argv[k]);
        }
    }
    if (entry == 0 || return_count == 0 || path == NULL)
        return fail("entry=, return= and out= are needed", argc > 0 ? argv[0] : "");
    out = fopen(path, "w");
    if (out == NULL) return fail("cannot write", path);
    setvbuf(out, NULL, _IOLBF, 0); /* a line per call, on disk however QEMU ends */
    qemu_plugin_register_vcpu_tb_trans_cb(id, translated);
    qemu_plugin_register_atexit_cb(id, finished, NULL);
    return 0;
}
