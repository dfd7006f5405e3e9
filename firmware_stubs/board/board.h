/*
 * What the board's main loop (board_main.c) needs from the hardware: start-up, a millisecond
 * clock and USART1. startup.c and usart.c implement it for the STM32F405; a board project with
 * its own HAL implements these few functions instead.
 */
#ifndef BOARD_H
#define BOARD_H

#include <stddef.h>
#include <stdint.h>

/* The core clock (Hz) board_clock_init settled on: 168 MHz from the PLL, or 16 MHz (HSI) when the
 * external crystal or the PLL did not come up. */
extern uint32_t board_core_hz;
/* The clock of APB2, USART1's bus: half the core clock on the PLL, the HSI itself without it. */
extern uint32_t board_apb2_hz;

/* Clocks, flash wait states and the millisecond SysTick. Never waits without a bound: QEMU's F405
 * has no clock controller, so its ready bits never rise (see startup.c). */
void board_clock_init(void);
/* Milliseconds since board_clock_init, wrapping after 49 days. */
uint32_t board_millis(void);

/* USART1 at `baud`, 8N1, receiving by interrupt into a ring buffer. */
void usart_init(uint32_t baud);
/* Up to `cap` received bytes, oldest first; returns how many (0: none waiting). */
size_t usart_read(uint8_t *out, size_t cap);
/* Send `len` bytes, waiting for the transmitter (a 50-byte frame takes 0.55 ms at 921600 baud). */
void usart_write(const uint8_t *data, size_t len);
/* Bytes lost because the ring buffer was full or the receiver overran, since start-up. */
uint32_t usart_dropped(void);

/* Sleep until a byte has arrived or the next interrupt (the millisecond SysTick). */
void usart_wait_for_input(void);

#endif /* BOARD_H */
