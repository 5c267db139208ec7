/*
 * switch_x86_64.c — fresh stacks for x86-64: the frame conc__switch (see
 * switch_x86_64.h) resumes into on a new stack, and the entry trampoline.
 *
 * The first switch to a fresh stack loads the FP control words of the
 * context that made the frame (its spawner), the resume address (conc__switch_start) and "rbp", which carries the
 * argument, from the frame's three slots, 152 bytes (the red zone and the
 * slots) below the aligned top, and jumps with the stack pointer at that
 * top, as for any suspended context; the trampoline calls
 * conc__green_entry(arg) with the stack 16-byte aligned, as the ABI wants
 * at a call.
 */
#if defined(__x86_64__)
#include <stdint.h>

#include "arch/switch.h"

__asm__(".text\n"
        ".globl conc__switch_start\n"
        ".hidden conc__switch_start\n"
        ".type conc__switch_start,@function\n"
        ".p2align 4\n"
        "conc__switch_start:\n"
        "  .cfi_startproc\n"
        "  .cfi_undefined %rip\n" /* the outermost frame, for debuggers */
        "  movq %rbp, %rdi\n"
        "  xorl %ebp, %ebp\n"
        "  call conc__green_entry\n"
        "  ud2\n"
        "  .cfi_endproc\n"
        ".size conc__switch_start,.-conc__switch_start\n");

void conc__switch_start(void);

void *conc__switch_frame(void *top, void *arg)
{
    uint64_t *sp = (uint64_t *)((uintptr_t)top & ~(uintptr_t)15) - 19; /* 152 bytes */
    sp[0] = 0;
    sp[1] = (uint64_t)(uintptr_t)conc__switch_start;
    sp[2] = (uint64_t)(uintptr_t)arg; /* popped into rbp */
    return conc__switch_inherit_fp(sp); /* the caller's MXCSR, x87 cw */
}
#endif
