/*
 * switch_x86_64.h — the context switch for x86-64 (System V), inlined.
 *
 * The switch is a few instructions of inline assembly in the middle of the
 * scheduler, entered and left by jumps: no call, no ret. That keeps the
 * CPU's return-stack predictor in step (a call without its ret — what a
 * called switch routine that ends in a jump does — makes every later
 * return mispredict; measured: 40 ns instead of 13 per green switch).
 *
 * The asm declares every register it does not restore as clobbered, so
 * the compiler saves exactly what is live across the switch — at most the
 * callee-saved registers the ABI requires, usually fewer. What it keeps by
 * hand on the stack (8-byte slots, from the saved stack pointer up):
 *   [0] MXCSR (low 4 bytes) | x87 control word (bytes 4-5)
 *   [1] resume address   [2] rbp
 * below the 128-byte red zone of the suspended code. The stack pointer
 * moves once on each side (the slots are stored, not pushed): the
 * switching side reads the other context's slots, puts its stack pointer
 * back where it was when it suspended and jumps, so the resumed code
 * starts with its own stack pointer and the compiler's unwind rule (a
 * signal landing there unwinds normally). 17 instructions for a switch
 * whose control words match.
 * The FP control words are callee-saved; they are loaded back only when
 * their control bits differ from the running context's (ldmxcsr costs tens
 * of ns on some CPUs, a compare nothing), so exception flags are per
 * thread, control bits per context. The suspended frame at rdx stays
 * valid during the switch: nothing frees a stack before it is left.
 */
#ifndef CONC_ARCH_SWITCH_X86_64_H
#define CONC_ARCH_SWITCH_X86_64_H

/* Unwind info for a signal that lands inside the switch (conc_dump asks
 * every thread for its backtrace with a signal): from the first stack
 * move to the last the frame is marked outermost, so a backtrace taken
 * there ends at the switch instead of following a bogus frame (the stack
 * pointer is off by the red zone and the pushes, then on the other
 * context's stack) into unmapped memory. The frame's CFA is said to be
 * the stack pointer itself for that stretch: the unwinder still reads the
 * callee-saved registers' slots relative to it, and those reads must land
 * on mapped stack, whatever the compiler's own rule was (rsp- or
 * rbp-based). The stretch ends with the jump, which the other side's
 * stack pointer, already back above its red zone, takes: at the resume
 * address the compiler's rule holds exactly (a debugger that resumes a
 * suspended context there, scripts/gdb, sets the same stack pointer).
 * (The resumed side used to step back over the red zone itself, and a
 * signal on that one instruction unwound from a CFA 152 bytes off and
 * crashed libgcc's unwinder: tests/green_switch_test.c,
 * dump_among_switches.) Past the jump's `addq` the slots lie below the
 * red zone, where a signal frame may land: they are read before it. */
#ifdef __GCC_HAVE_DWARF2_CFI_ASM
#define CONC__CFI(x) x "\n\t"
#else
#define CONC__CFI(x)
#endif

static inline __attribute__((always_inline)) void conc__switch(void **save, void *to)
{
    void *s = save, *t = to;
    __asm__ __volatile__(
        /* one stack move: the red zone (the code around may use it) and
         * the three slots; the slots are written, not pushed */
        "subq $152, %%rsp\n\t"
        CONC__CFI(".cfi_remember_state")
        CONC__CFI(".cfi_def_cfa %%rsp, 0")
        CONC__CFI(".cfi_undefined %%rip")
        "leaq 1f(%%rip), %%rax\n\t"
        "movq %%rax, 8(%%rsp)\n\t"
        "movq %%rbp, 16(%%rsp)\n\t"
        "stmxcsr (%%rsp)\n\t"
        "fnstcw 4(%%rsp)\n\t"
        "movl (%%rsp), %%eax\n\t"
        "movzwl 4(%%rsp), %%edx\n\t"
        "movq %%rsp, (%%rdi)\n\t"
        "movq %%rsi, %%rsp\n\t"
        "xorl (%%rsp), %%eax\n\t"
        "xorw 4(%%rsp), %%dx\n\t"
        "andl $0xffc0, %%eax\n\t"
        "orl %%edx, %%eax\n\t"
        "jnz 4f\n\t"
        "3:\n\t"
        "movq 16(%%rsp), %%rbp\n\t"
        "movq 8(%%rsp), %%rax\n\t"
        "addq $152, %%rsp\n\t"
        "jmpq *%%rax\n\t"
        "4:\n\t"
        "ldmxcsr (%%rsp)\n\t"
        "fldcw 4(%%rsp)\n\t"
        "jmp 3b\n\t"
        "1:\n\t"
        CONC__CFI(".cfi_restore_state")
        : "+D"(s), "+S"(t)
        :
        : "rax", "rbx", "rcx", "rdx", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "memory", "cc",
          "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
          "xmm12", "xmm13", "xmm14", "xmm15", "st", "st(1)", "st(2)", "st(3)", "st(4)", "st(5)", "st(6)",
          "st(7)", "mm0", "mm1", "mm2", "mm3", "mm4", "mm5", "mm6", "mm7");
}

/* A green thread starts with its spawner's FP control words (as a POSIX
 * thread starts with its creator's floating-point environment): store the
 * calling context's MXCSR and x87 control word into slot [0] of a
 * suspended frame (a recycled stack's, or a fresh one from
 * conc__switch_frame), which the first switch into it loads when they
 * differ from the switcher's. Two instructions; returns sp. */
static inline __attribute__((always_inline)) void *conc__switch_inherit_fp(void *sp)
{
    __asm__ __volatile__("stmxcsr (%0)\n\t"
                         "fnstcw 4(%0)"
                         :
                         : "r"(sp)
                         : "memory");
    return sp;
}

#endif
