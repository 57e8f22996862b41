/* Helpers shared by the bench load generators (udpload.c, punchload.c, relayload.c). */
#ifndef LOADGEN_H
#define LOADGEN_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static inline void die(const char *what) {
    perror(what);
    exit(2);
}

static inline double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static inline double cpu_now(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec +
           usage.ru_stime.tv_usec / 1e6;
}

static inline void pause_for(double seconds) {
    struct timespec ts = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static inline size_t put_varint(unsigned char *out, unsigned long long value) {
    size_t at = 0;
    do {
        out[at] = value & 0x7f;
        value >>= 7;
        if (value) out[at] |= 0x80;
        at++;
    } while (value);
    return at;
}

#endif
