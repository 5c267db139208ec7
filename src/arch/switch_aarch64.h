/*
 * switch_aarch64.h — the context switch for AArch64 (AAPCS64), inlined.
 *
 * As on x86-64 (see switch_x86_64.h): inline assembly entered and left by
 * branches, no call/return pair to unbalance the return predictor; every
 * register it does not restore is declared clobbered, so the compiler
 * saves only what is live (at most x19-x28 and d8-d15, the callee-saved
 * set). Kept by hand, 32 bytes at the saved stack pointer: x29 (frame
 * pointer), the resume address and FPCR (rounding mode, flush-to-zero:
 * callee-saved in AAPCS64, so per context like MXCSR and the x87 control
 * word on x86-64; loaded back only when it differs), 8 bytes of padding.
 */
#ifndef CONC_ARCH_SWITCH_AARCH64_H
#define CONC_ARCH_SWITCH_AARCH64_H

/* Unwind info for a signal that lands inside the switch (conc_dump's
 * backtrace signal): from the stack move to the branch the frame is
 * marked outermost, with the stack pointer as its CFA (see
 * switch_x86_64.h). Directives only. */
#ifdef __GCC_HAVE_DWARF2_CFI_ASM
#define CONC__CFI(x) x "\n\t"
#else
#define CONC__CFI(x)
#endif

static inline __attribute__((always_inline)) void conc__switch(void **save, void *to)
{
    register void *s __asm__("x0") = save;
    register void *t __asm__("x1") = to;
    __asm__ __volatile__(
        "adr x9, 1f\n\t"
        "mrs x10, fpcr\n\t"
        "stp x29, x9, [sp, #-32]!\n\t"
        CONC__CFI(".cfi_remember_state")
        CONC__CFI(".cfi_def_cfa sp, 0")
        CONC__CFI(".cfi_undefined x30")
        "str x10, [sp, #16]\n\t"
        "mov x11, sp\n\t"
        "str x11, [x0]\n\t"
        "mov sp, x1\n\t"
        "ldr x11, [sp, #16]\n\t"
        "cmp x10, x11\n\t"
        "b.eq 2f\n\t"
        "msr fpcr, x11\n\t" /* only when it differs: msr fpcr may serialise */
        "2:\n\t"
        "ldp x29, x9, [sp], #32\n\t"
        "br x9\n\t"
        "1:\n\t"
        CONC__CFI(".cfi_restore_state")
        : "+r"(s), "+r"(t)
        :
        : "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12", "x13", "x14", "x15", "x16",
          "x17", "x18", "x19", "x20", "x21", "x22", "x23", "x24", "x25", "x26", "x27", "x28", "x30", "memory",
          "cc", "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9", "v10", "v11", "v12", "v13", "v14",
          "v15", "v16", "v17", "v18", "v19", "v20", "v21", "v22", "v23", "v24", "v25", "v26", "v27", "v28",
          "v29", "v30", "v31");
}

/* A green thread starts with its spawner's FPCR (as a POSIX thread starts
 * with its creator's floating-point environment): store the calling
 * context's FPCR into a suspended frame (a recycled stack's, or a fresh
 * one from conc__switch_frame), which the first switch into it loads when
 * it differs from the switcher's. Two instructions; returns sp. */
static inline __attribute__((always_inline)) void *conc__switch_inherit_fp(void *sp)
{
    unsigned long v;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(v));
    ((unsigned long *)sp)[2] = v;
    return sp;
}

#endif
