/* sanitize.h — which sanitizer this file is compiled under (private):
 * CONC__ASAN, CONC__TSAN, for gcc (__SANITIZE_*__) and clang (__has_feature). */
#ifndef CONC_CORE_SANITIZE_H
#define CONC_CORE_SANITIZE_H

#if defined(__SANITIZE_ADDRESS__)
#define CONC__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CONC__ASAN 1
#endif
#endif

#if defined(__SANITIZE_THREAD__)
#define CONC__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CONC__TSAN 1
#endif
#endif

#endif
