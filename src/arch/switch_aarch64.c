/*
 * switch_aarch64.c — fresh stacks for AArch64: the frame conc__switch (see
 * switch_aarch64.h) resumes into on a new stack, and the entry trampoline.
 *
 * The first switch loads the FPCR of the context that made the frame (its
 * spawner) and pops "x29", which carries
 * the argument, and the resume address (conc__switch_start); the trampoline clears the frame pointer
 * and calls conc__green_entry(arg).
 */
#if defined(__aarch64__)
#include <stdint.h>

#include "arch/switch.h"

__asm__(".text\n"
        ".globl conc__switch_start\n"
        ".hidden conc__switch_start\n"
        ".type conc__switch_start,%function\n"
        ".p2align 4\n"
        "conc__switch_start:\n"
        "  .cfi_startproc\n"
        "  .cfi_undefined x30\n"
        "  mov x0, x29\n"
        "  mov x29, #0\n"
        "  bl conc__green_entry\n"
        "  brk #0\n"
        "  .cfi_endproc\n"
        ".size conc__switch_start,.-conc__switch_start\n");

void conc__switch_start(void);

void *conc__switch_frame(void *top, void *arg)
{
    uint64_t *sp = (uint64_t *)((uintptr_t)top & ~(uintptr_t)15) - 4;
    sp[0] = (uint64_t)(uintptr_t)arg;                 /* x29 */
    sp[1] = (uint64_t)(uintptr_t)conc__switch_start;  /* resume address */
    sp[3] = 0;
    return conc__switch_inherit_fp(sp);               /* FPCR: the caller's */
}
#endif
