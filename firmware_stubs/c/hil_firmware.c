/*
 * The part of a firmware's side of the protocol that does not depend on where it runs: the
 * HELLO it sends and whether hil's HELLO suits it. main_posix.c (a process on UDP or a serial
 * port) and board/board_main.c (a bare STM32F405 on its UART) both serve the protocol with it.
 */
#include <stdio.h>
#include <string.h>

#include "hil_firmware.h"

void hil_firmware_hello(const hil_firmware *fw, hil_hello *hello)
{
    size_t k;
    memset(hello, 0, sizeof *hello);
    hello->version = HIL_PROTOCOL_VERSION;
    hil_str_set(&hello->role, "firmware");
    hil_str_set(&hello->vehicle, fw->vehicle);
    hello->actuators = fw->actuators;
    hello->tick_rate_hz = 0; /* any */
    hello->sensor_count = (uint32_t)fw->need_count;
    for (k = 0; k < fw->need_count; k++) {
        hil_str_set(&hello->sensors[k].name, fw->needs[k].name);
        hello->sensors[k].fields = fw->needs[k].fields;
        hello->sensors[k].rate_hz = fw->sensor_rate(k);
    }
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
