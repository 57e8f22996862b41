/* Helpers shared by the bench load generators (udpload.c, punchload.c, relayload.c). */
#ifndef LOADGEN_H
#define LOADGEN_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
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

/* Address n of the bench's source pool `block` in 127.0.0.0/8: 127.(block + n / 62500).x.y
 * with x in 0..249 and y in 1..250.  Linux accepts every 127/8 address on loopback without
 * configuration, and it reaches this machine's other addresses too, so each simulated
 * machine can have its own source address and a server's per-IP limits see many sources. */
static inline struct in_addr pool_address(unsigned block, unsigned long n) {
    unsigned long octet2 = block + n / 62500, rest = n % 62500;
    struct in_addr address = {htonl((127u << 24) | (unsigned)(octet2 << 16) |
                                    (unsigned)(rest / 250 << 8) | (unsigned)(rest % 250 + 1))};
    return address;
}

/* How many source addresses to spread over (LOADGEN_SOURCES; 0: do not bind, the
 * kernel chooses, as for a server on another machine). */
static inline unsigned long loadgen_sources(unsigned long fallback) {
    const char *text = getenv("LOADGEN_SOURCES");
    return text ? strtoul(text, NULL, 10) : fallback;
}

/* Bind `fd` to address n of pool `block` (any port); exits when the kernel refuses. */
static inline void bind_pool(int fd, unsigned block, unsigned long n) {
    struct sockaddr_in local = {.sin_family = AF_INET, .sin_addr = pool_address(block, n)};
    if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) die("bind source address");
}

#endif
