/*
 * USART1 on PA9/PA10: receive by interrupt into a ring buffer, transmit by polling TXE.
 *
 * Receive must be interrupt-driven: the F405's USART holds one byte, and QEMU's hands over the
 * next only once that one is read (it has no DMA either). The ring buffer holds a whole frame
 * with room to spare, so the main loop may take a tick's controller step between reads.
 */
#include <stdint.h>

#include "board.h"
#include "stm32f405.h"

#define RING 2048u /* a power of two: bytes, several whole frames of HIL_FRAME_BUFFER */

void usart1_irq(void);

static volatile uint8_t ring[RING];
static volatile uint32_t head; /* written by the interrupt only */
static volatile uint32_t tail; /* written by the main loop only */
static volatile uint32_t dropped;

void usart1_irq(void)
{
    uint32_t status = USART1_SR;
    if (status & (USART_SR_RXNE | USART_SR_ORE)) {
        uint8_t byte = (uint8_t)USART1_DR; /* reading SR then DR clears RXNE and ORE */
        if (status & USART_SR_ORE) dropped++;
        if (head - tail < RING) {
            ring[head % RING] = byte;
            head++;
        } else {
            dropped++;
        }
    }
}

void usart_init(uint32_t baud)
{
    RCC_AHB1ENR |= RCC_AHB1ENR_GPIOAEN;
    RCC_APB2ENR |= RCC_APB2ENR_USART1EN;
    /* PA9, PA10: alternate function 7 (USART1), fast, RX pulled up so a floating line reads idle */
    GPIOA_MODER = (GPIOA_MODER & ~(0xFu << 18)) | (0xAu << 18);
    GPIOA_OSPEEDR |= 0xFu << 18;
    GPIOA_PUPDR = (GPIOA_PUPDR & ~(0xFu << 18)) | (1u << 20);
    GPIOA_AFRH = (GPIOA_AFRH & ~0xFF0u) | 0x770u;
    /* 16x oversampling: BRR = f_APB2 / baud, rounded (84 MHz / 921600: 91, 0.2 % fast) */
    USART1_BRR = (board_apb2_hz + baud / 2u) / baud;
    USART1_CR1 = USART_CR1_UE | USART_CR1_TE | USART_CR1_RE | USART_CR1_RXNEIE;
    NVIC_ISER(USART1_IRQ / 32u) = 1u << (USART1_IRQ % 32u);
}

size_t usart_read(uint8_t *out, size_t cap)
{
    size_t n = 0;
    uint32_t end = head;
    while (tail != end && n < cap) {
        out[n++] = ring[tail % RING];
        tail++;
    }
    return n;
}

void usart_write(const uint8_t *data, size_t len)
{
    size_t k;
    for (k = 0; k < len; k++) {
        while (!(USART1_SR & USART_SR_TXE)) {
        }
        USART1_DR = data[k];
    }
}

uint32_t usart_dropped(void)
{
    return dropped;
}

void usart_wait_for_input(void)
{
    /* With interrupts masked, a byte that arrives between the check and WFI still wakes the core
     * (WFI wakes on a pending interrupt); it is taken once they are unmasked. */
    __asm__ volatile("cpsid i" ::: "memory");
    if (head == tail) __asm__ volatile("dsb\n\twfi" ::: "memory");
    __asm__ volatile("cpsie i" ::: "memory");
}
