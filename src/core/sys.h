/* sys.h — small system helpers more than one module needs (private). */
#ifndef CONC_CORE_SYS_H
#define CONC_CORE_SYS_H

#include <sys/types.h>
#include <sys/uio.h>

/* Threads of this process, from /proc/self/stat (field 20); 0 if unknown. */
long conc__process_threads(void);

/* write(2)/writev(2) of iov[0..n) on a non-socket fd without SIGPIPE: the
 * signal is blocked in the calling thread around the call and one it
 * raised is consumed, so a vanished reader is just EPIPE (a SIGPIPE the
 * caller already had pending is left alone). Returns bytes or -1 (errno).
 * Costs two sigmask calls: callers skip it when SIGPIPE is ignored. */
ssize_t conc__writev_nosigpipe(int fd, const struct iovec *iov, int n);

#endif
