/*
 * STM32F405 start-up: the vector table, the clocks and the millisecond SysTick.
 *
 * picolibc's own crt0 (_start) runs first: it enables the FPU, copies .data, clears .bss, sets up
 * thread-local storage (picolibc's errno is thread-local) and calls main. It finds this vector
 * table by the name __interrupt_vector, and picolibc.ld places the section .data.init.enter at the
 * start of flash, where the core reads its initial stack pointer and reset vector.
 */
#include <stdint.h>

#include "board.h"
#include "stm32f405.h"

#ifndef BOARD_HSE_HZ
#define BOARD_HSE_HZ 8000000u /* the crystal of most F4 flight controllers */
#endif
#define HSI_HZ 16000000u
#define PLL_HZ 168000000u
/* Polls of a ready bit before giving up on that clock: far longer than a crystal takes to start
 * (about 2 ms), and bounded, so a board without one (or QEMU, without a clock controller) boots. */
#define CLOCK_POLLS 500000u

extern uint32_t __stack[]; /* the top of RAM, from picolibc.ld */
void _start(void);
void usart1_irq(void);

uint32_t board_core_hz = HSI_HZ;
uint32_t board_apb2_hz = HSI_HZ;
static volatile uint32_t millis;

static void unexpected(void)
{
    for (;;) {
        /* A fault or an interrupt nothing enabled: stop here, where a debugger shows it. */
    }
}

static void systick(void)
{
    millis++;
}

typedef void (*vector)(void);

#define U unexpected
#define U8 U, U, U, U, U, U, U, U

/* Entry 0 is the initial stack pointer, the rest handlers: the Cortex-M4's 16, then the F405's
 * interrupt lines 0..81. Every line points somewhere. */
__attribute__((section(".data.init.enter"), used)) const vector __interrupt_vector[] = {
    (vector)(uintptr_t)__stack, _start, U, U, U, U, U, U, U, U, U, U, U, U, U, systick,
    U8, U8, U8, U8, U, U, U, U, U, /* lines 0..36 */
    usart1_irq,                    /* line 37 */
    U8, U8, U8, U8, U8, U, U, U, U /* lines 38..81 */
};
typedef char vector_table_has_98_entries[sizeof __interrupt_vector / sizeof __interrupt_vector[0] == 98 ? 1 : -1];

static int ready(uint32_t bit)
{
    uint32_t k;
    for (k = 0; k < CLOCK_POLLS; k++)
        if (RCC_CR & bit) return 1;
    return 0;
}

/* 168 MHz from the crystal through the PLL (AHB 168, APB2 84, APB1 42 MHz), else the 16 MHz HSI
 * the core starts on. Each ready bit is polled a bounded number of times: a board whose crystal
 * fails still boots, slowly, rather than hanging. */
static void start_pll(void)
{
    RCC_CR |= RCC_CR_HSEON;
    if (!ready(RCC_CR_HSERDY)) return;
    /* M = HSE in MHz (1 MHz into the VCO), N = 336, P = 2: 168 MHz; Q = 7: 48 MHz for USB; source HSE */
    RCC_PLLCFGR = (BOARD_HSE_HZ / 1000000u) | (336u << 6) | (0u << 16) | (1u << 22) | (7u << 24);
    RCC_CR |= RCC_CR_PLLON;
    if (!ready(RCC_CR_PLLRDY)) return;
    FLASH_ACR = FLASH_ACR_5WS | FLASH_ACR_CACHES;
    RCC_CFGR = (5u << 10) | (4u << 13) | RCC_CFGR_SW_PLL; /* APB1 /4, APB2 /2, system clock from the PLL */
    {
        uint32_t k;
        for (k = 0; k < CLOCK_POLLS; k++) {
            if ((RCC_CFGR & RCC_CFGR_SWS_MASK) == RCC_CFGR_SWS_PLL) {
                board_core_hz = PLL_HZ;
                board_apb2_hz = PLL_HZ / 2u;
                return;
            }
        }
    }
}

void board_clock_init(void)
{
    /* The HSI is on and ready out of reset, so a real F405's RCC_CR never reads 0. QEMU's
     * netduinoplus2 has no clock controller (its registers read as zero) and runs the core at
     * 168 MHz whatever is written there: take that clock, and touch nothing. */
    if ((RCC_CR & (RCC_CR_HSION | RCC_CR_HSIRDY)) == 0) {
        board_core_hz = PLL_HZ;
        board_apb2_hz = PLL_HZ / 2u;
    } else {
        start_pll();
    }
    SYST_RVR = board_core_hz / 1000u - 1u;
    SYST_CVR = 0;
    SYST_CSR = 7u; /* on, interrupting, from the core clock */
}

uint32_t board_millis(void)
{
    return millis;
}
