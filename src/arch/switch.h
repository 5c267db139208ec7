/*
 * switch.h — the machine-level context switch (private).
 *
 * A suspended context is nothing but a stack pointer: conc__switch(save,
 * to) stores the running context's stack pointer in *save, loads `to`
 * and continues wherever that context left off; when something switches
 * back, conc__switch returns. It is inline assembly, one header per CPU
 * (switch_<cpu>.h), and what it saves is described there.
 *
 * conc__switch_frame(top, arg) prepares a fresh stack (top: one past its
 * highest byte) whose first switch enters conc__green_entry(arg), which
 * never returns; it returns the stack pointer to switch to. It lives in
 * switch_<cpu>.c with the entry trampoline. The frame carries the calling
 * context's FP control words; conc__switch_inherit_fp(sp) (inline, in
 * switch_<cpu>.h) puts them into a suspended frame that is reused, so a
 * green thread starts with its spawner's words either way.
 */
#ifndef CONC_ARCH_SWITCH_H
#define CONC_ARCH_SWITCH_H

#include <stddef.h>

#if defined(__x86_64__)
#include "arch/switch_x86_64.h"
#elif defined(__aarch64__)
#include "arch/switch_aarch64.h"
#else
#error "conc: green threads need a context switch for this CPU (src/arch/)"
#endif

void *conc__switch_frame(void *top, void *arg);

/* Defined by the green module: the body of every green thread. */
void conc__green_entry(void *arg) __attribute__((noreturn));

#endif
