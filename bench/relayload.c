/* Loopback TCP load generator for hbbr, compiled by bench/relay.py.
 *
 *   relayload direct STREAMS SECONDS
 *   relayload relay [HOST:]PORT STREAMS SECONDS [LICENCE]
 *   relayload splice STREAMS SECONDS
 *   relayload ws [HOST:]PORT STREAMS SECONDS [LICENCE]
 *   relayload pair [HOST:]PORT SECONDS THREADS [LICENCE]
 *   relayload idle [HOST:]PORT SESSIONS [LICENCE]
 *
 * The relay is at HOST:PORT (default 127.0.0.1).  Its connections come from the source
 * pool 127.6.x.y, connection n from address n % LOADGEN_SOURCES (default 1000), so
 * that no source exceeds a relay's per-IP connection limits; LOADGEN_SOURCES=0 binds
 * nothing (a relay on another machine).
 *
 * direct: STREAMS sender->receiver TCP pairs on 127.0.0.1, no relay (the ceiling).
 * relay:  STREAMS pairs through hbbr on 127.0.0.1:PORT; each side first sends a
 *         framed RendezvousMessage{request_relay{uuid, licence_key}}, then the
 *         sender blasts bytes and the receiver counts them.
 * splice: the ceiling for any relay: STREAMS pairs through a minimal relay in this
 *         process, one thread per stream moving bytes socket -> pipe -> socket with
 *         splice(2) (1 MiB pipe); its CPU is printed as relay_cpu.
 * ws:     like relay, over hbbr's WebSocket port: each side does the HTTP upgrade,
 *         sends RequestRelay in a binary message, then the sender sends 64 KiB
 *         binary messages (masked with a zero key, which is valid and costs the
 *         client nothing) and the receiver counts message payload bytes.
 * pair:   THREADS threads each pair sessions back to back for SECONDS: two
 *         connections send RequestRelay with one uuid, one byte crosses, both close
 *         (SO_LINGER 0); prints pairs= and pairs_per_s=.
 * idle:   opens SESSIONS paired sessions (each checked by one byte crossing), prints
 *         "ready sessions=N", holds them until stdin closes, then closes them.
 * One sender and one receiver thread per stream, so the client is never the
 * bottleneck a Python client is.  After a 0.5 s warm-up the received bytes are
 * counted for SECONDS; prints "bytes=N seconds=T gbps=G cpu=C" (C: this
 * process's CPU over the measured window, in cores).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "loadgen.h"

#define BUFFER (256 * 1024)
#define MAX_STREAMS 64

static atomic_ullong received, connections;
static struct in_addr relay_host = {0};
static unsigned long sources;
static atomic_int stopping;
static int websocket;

static double thread_cpu(pthread_t thread) {
    clockid_t clock;
    struct timespec ts;
    if (pthread_getcpuclockid(thread, &clock) != 0 || clock_gettime(clock, &ts) != 0) return 0;
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A connection to `host`:`port`; from the next address of the source pool if `spread`. */
static int connect_to(struct in_addr host, int port, int spread) {
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr = host};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    if (spread && sources)
        bind_pool(fd, 6, (unsigned long)(atomic_fetch_add(&connections, 1) % sources));
    if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0) die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (websocket) {
        char request[256], response[1024];
        int length = snprintf(request, sizeof request,
                              "GET / HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                              "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "Sec-WebSocket-Version: 13\r\n\r\n", inet_ntoa(host), port);
        if (send(fd, request, (size_t)length, MSG_NOSIGNAL) != length) die("upgrade");
        size_t got = 0;
        /* Read the 101 response byte by byte, so no frame byte is consumed with it. */
        while (got < sizeof response - 1) {
            if (recv(fd, response + got, 1, 0) != 1) die("upgrade response");
            got++;
            if (got >= 4 && memcmp(response + got - 4, "\r\n\r\n", 4) == 0) break;
        }
        if (strncmp(response, "HTTP/1.1 101", 12) != 0) {
            fprintf(stderr, "relayload: no WebSocket upgrade\n");
            exit(2);
        }
    }
    return fd;
}

/* A client's binary WebSocket frame header (FIN, masked with a zero key). */
static size_t ws_header(unsigned char *out, size_t length) {
    size_t at = 0;
    out[at++] = 0x82;
    if (length < 126) {
        out[at++] = 0x80 | (unsigned char)length;
    } else if (length < 65536) {
        out[at++] = 0x80 | 126;
        out[at++] = (unsigned char)(length >> 8);
        out[at++] = (unsigned char)length;
    } else {
        out[at++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) out[at++] = (unsigned char)((unsigned long long)length >> (8 * i));
    }
    memset(out + at, 0, 4);
    return at + 4;
}

static void send_all(int fd, const unsigned char *data, size_t length) {
    while (length > 0) {
        ssize_t n = send(fd, data, length, MSG_NOSIGNAL);
        if (n < 0) die("send");
        data += n;
        length -= (size_t)n;
    }
}

/* A protobuf length-delimited field: tag, varint length, bytes. */
static size_t put_field(unsigned char *out, unsigned tag, const char *text) {
    size_t length = strlen(text), at = 0;
    out[at++] = (unsigned char)tag;
    at += put_varint(out + at, length);
    memcpy(out + at, text, length);
    return at + length;
}

/* The BytesCodec frame of RendezvousMessage{request_relay(18){uuid(2), licence_key(6)}}. */
static void request_relay(int fd, const char *uuid, const char *licence) {
    unsigned char inner[512], payload[600], frame[604];
    size_t inner_length = put_field(inner, 0x12, uuid);
    if (*licence) inner_length += put_field(inner + inner_length, 0x32, licence);
    size_t at = 0;
    payload[at++] = 0x92;
    payload[at++] = 0x01;
    at += put_varint(payload + at, inner_length);
    memcpy(payload + at, inner, inner_length);
    size_t length = at + inner_length;
    if (websocket) {
        unsigned char message[1400];
        if (length > 1200) die("request_relay too long");
        size_t header = ws_header(message, length);
        memcpy(message + header, payload, length);
        send_all(fd, message, header + length);
        return;
    }
    size_t header_length;
    if (length < 64) {
        frame[0] = (unsigned char)(length << 2);
        header_length = 1;
    } else {
        unsigned header = (unsigned)(length << 2) | 1;
        frame[0] = header & 0xff;
        frame[1] = (header >> 8) & 0xff;
        header_length = 2;
    }
    memcpy(frame + header_length, payload, length);
    send_all(fd, frame, header_length + length);
}

static void *sender(void *arg) {
    int fd = (int)(long)arg;
    unsigned char *buffer = malloc(BUFFER);
    memset(buffer, 0xa5, BUFFER);
    if (websocket) {
        /* 64 KiB messages, each header followed by its payload, sent in one call */
        enum { MESSAGE = 65536 };
        size_t header = ws_header(buffer, MESSAGE);
        memset(buffer + header, 0xa5, MESSAGE);
        while (!atomic_load(&stopping)) {
            if (send(fd, buffer, header + MESSAGE, MSG_NOSIGNAL) < 0) break;
        }
        free(buffer);
        return NULL;
    }
    while (!atomic_load(&stopping)) {
        if (send(fd, buffer, BUFFER, MSG_NOSIGNAL) < 0) break;
    }
    free(buffer);
    return NULL;
}

static void *receiver(void *arg) {
    int fd = (int)(long)arg;
    unsigned char *buffer = malloc(BUFFER);
    /* WebSocket: count payload bytes only; `left` bytes of payload remain in the
     * current message, `header` holds a partly received frame header. */
    unsigned long long left = 0;
    unsigned char header[14];
    size_t have = 0;
    for (;;) {
        ssize_t n = recv(fd, buffer, BUFFER, 0);
        if (n <= 0) break;
        if (!websocket) {
            atomic_fetch_add(&received, (unsigned long long)n);
            continue;
        }
        unsigned long long payload = 0;
        for (ssize_t at = 0; at < n;) {
            if (left > 0) {
                unsigned long long take = (unsigned long long)(n - at) < left ? (unsigned long long)(n - at) : left;
                payload += take;
                left -= take;
                at += (ssize_t)take;
                continue;
            }
            header[have++] = buffer[at++];
            if (have < 2) continue;
            size_t need = 2 + ((header[1] & 0x7f) == 126 ? 2 : (header[1] & 0x7f) == 127 ? 8 : 0) +
                          ((header[1] & 0x80) ? 4 : 0);
            if (have < need) continue;
            unsigned long long length = header[1] & 0x7f;
            if (length == 126) length = ((unsigned)header[2] << 8) | header[3];
            else if (length == 127) {
                length = 0;
                for (int i = 2; i < 10; i++) length = (length << 8) | header[i];
            }
            left = length;
            have = 0;
        }
        atomic_fetch_add(&received, payload);
    }
    free(buffer);
    return NULL;
}

static void direct_pairs(int streams, int *senders, int *receivers) {
    struct sockaddr_in address = {.sin_family = AF_INET};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t size = sizeof address;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0) die("socket");
    if (bind(listener, (struct sockaddr *)&address, size) < 0) die("bind");
    if (listen(listener, MAX_STREAMS) < 0) die("listen");
    if (getsockname(listener, (struct sockaddr *)&address, &size) < 0) die("getsockname");
    for (int i = 0; i < streams; i++) {
        senders[i] = connect_to(address.sin_addr, ntohs(address.sin_port), 0);
        receivers[i] = accept(listener, NULL, NULL);
        if (receivers[i] < 0) die("accept");
    }
    close(listener);
}

static void relay_pairs(int port, int streams, const char *licence, int *senders,
                        int *receivers) {
    char uuid[64];
    for (int i = 0; i < streams; i++) {
        snprintf(uuid, sizeof uuid, "bench-%d-%d", (int)getpid(), i);
        receivers[i] = connect_to(relay_host, port, 1);
        request_relay(receivers[i], uuid, licence);
        senders[i] = connect_to(relay_host, port, 1);
        request_relay(senders[i], uuid, licence);
    }
}

/* ---- splice: a minimal relay, the ceiling ---- */

static void *splice_relay(void *arg) {
    int *fds = arg; /* from, to */
    int pipe_fds[2];
    if (pipe(pipe_fds) < 0) die("pipe");
    fcntl(pipe_fds[1], F_SETPIPE_SZ, 1 << 20);
    for (;;) {
        ssize_t n = splice(fds[0], NULL, pipe_fds[1], NULL, 1 << 20, SPLICE_F_MOVE);
        if (n <= 0) break;
        while (n > 0) {
            ssize_t m = splice(pipe_fds[0], NULL, fds[1], NULL, (size_t)n, SPLICE_F_MOVE);
            if (m <= 0) return NULL;
            n -= m;
        }
    }
    return NULL;
}

static int listener_on(int *port) {
    struct sockaddr_in address = {.sin_family = AF_INET};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t size = sizeof address;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0) die("socket");
    if (bind(listener, (struct sockaddr *)&address, size) < 0) die("bind");
    if (listen(listener, 1024) < 0) die("listen");
    if (getsockname(listener, (struct sockaddr *)&address, &size) < 0) die("getsockname");
    *port = ntohs(address.sin_port);
    return listener;
}

static pthread_t relays[MAX_STREAMS];
static int relay_fds[MAX_STREAMS][2];

static void spliced_pairs(int streams, int *senders, int *receivers) {
    int front_port, back_port;
    int front = listener_on(&front_port), back = listener_on(&back_port);
    for (int i = 0; i < streams; i++) {
        struct in_addr loopback = {htonl(INADDR_LOOPBACK)};
        senders[i] = connect_to(loopback, front_port, 0);
        relay_fds[i][0] = accept(front, NULL, NULL);
        relay_fds[i][1] = connect_to(loopback, back_port, 0);
        receivers[i] = accept(back, NULL, NULL);
        if (relay_fds[i][0] < 0 || receivers[i] < 0) die("accept");
        pthread_create(&relays[i], NULL, splice_relay, relay_fds[i]);
    }
    close(front);
    close(back);
}

/* ---- pair / idle: sessions paired by uuid, one byte crossing each ---- */

static int pair_port;
static const char *pair_licence = "";
static atomic_ullong pairs_done, pair_failures;

static void close_now(int fd) {
    struct linger linger = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, sizeof linger);
    close(fd);
}

/* Open one paired session; 0 and the two fds on success. */
static int open_session(const char *uuid, int *a, int *b) {
    *a = connect_to(relay_host, pair_port, 1);
    request_relay(*a, uuid, pair_licence);
    *b = connect_to(relay_host, pair_port, 1);
    request_relay(*b, uuid, pair_licence);
    unsigned char byte = 0x5a;
    send_all(*b, &byte, 1);
    struct timeval timeout = {5, 0};
    setsockopt(*a, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    return recv(*a, &byte, 1, 0) == 1 ? 0 : -1;
}

static double pair_until;

static void *pair_worker(void *arg) {
    long index = (long)arg;
    char uuid[64];
    for (unsigned long long n = 0; now() < pair_until; n++) {
        int a, b;
        snprintf(uuid, sizeof uuid, "pair-%d-%ld-%llu", (int)getpid(), index, n);
        if (open_session(uuid, &a, &b) == 0) atomic_fetch_add(&pairs_done, 1);
        else atomic_fetch_add(&pair_failures, 1);
        close_now(a);
        close_now(b);
    }
    return NULL;
}

static int pair_main(int seconds_count, double seconds, int threads) {
    (void)seconds_count;
    pthread_t workers[64];
    double cpu_start = cpu_now(), start = now();
    pair_until = start + seconds;
    for (long t = 0; t < threads; t++) pthread_create(&workers[t], NULL, pair_worker, (void *)t);
    for (int t = 0; t < threads; t++) pthread_join(workers[t], NULL);
    double elapsed = now() - start;
    printf("pairs=%llu failures=%llu seconds=%.3f pairs_per_s=%.1f cpu=%.3f\n",
           (unsigned long long)atomic_load(&pairs_done),
           (unsigned long long)atomic_load(&pair_failures), elapsed,
           atomic_load(&pairs_done) / elapsed, (cpu_now() - cpu_start) / elapsed);
    return atomic_load(&pairs_done) > 0 ? 0 : 1;
}

static int idle_main(int sessions) {
    int *fds = malloc(sizeof(int) * 2 * (size_t)sessions);
    char uuid[64];
    int opened = 0;
    for (int i = 0; i < sessions; i++) {
        snprintf(uuid, sizeof uuid, "idle-%d-%d", (int)getpid(), i);
        if (open_session(uuid, &fds[2 * i], &fds[2 * i + 1]) != 0) {
            fprintf(stderr, "relayload: session %d did not pair\n", i);
            return 1;
        }
        opened++;
    }
    printf("ready sessions=%d\n", opened);
    fflush(stdout);
    char line[16];
    while (read(0, line, sizeof line) > 0) {
    }
    for (int i = 0; i < 2 * opened; i++) close_now(fds[i]);
    return 0;
}

/* "HOST:PORT" sets relay_host; "PORT" keeps 127.0.0.1.  Returns the port. */
static int parse_target(const char *target) {
    const char *colon = strrchr(target, ':');
    relay_host.s_addr = htonl(INADDR_LOOPBACK);
    if (colon == NULL) return atoi(target);
    char host[64];
    snprintf(host, sizeof host, "%.*s", (int)(colon - target), target);
    if (inet_pton(AF_INET, host, &relay_host) != 1) {
        fprintf(stderr, "relayload: HOST must be an IPv4 address\n");
        exit(2);
    }
    return atoi(colon + 1);
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    sources = loadgen_sources(1000);
    if (argc >= 5 && strcmp(argv[1], "pair") == 0) {
        pair_port = parse_target(argv[2]);
        if (argc > 5) pair_licence = argv[5];
        int threads = atoi(argv[4]);
        if (threads < 1 || threads > 64) return 2;
        return pair_main(0, atof(argv[3]), threads);
    }
    if (argc >= 4 && strcmp(argv[1], "idle") == 0) {
        pair_port = parse_target(argv[2]);
        if (argc > 4) pair_licence = argv[4];
        return idle_main(atoi(argv[3]));
    }
    int spliced = argc == 4 && strcmp(argv[1], "splice") == 0;
    websocket = argc >= 5 && strcmp(argv[1], "ws") == 0;
    if (websocket) argv[1] = "relay";
    int relay = argc >= 5 && strcmp(argv[1], "relay") == 0;
    if (!relay && !spliced && !(argc == 4 && strcmp(argv[1], "direct") == 0)) {
        fprintf(stderr, "usage: relayload direct|splice STREAMS SECONDS\n"
                        "       relayload relay|ws [HOST:]PORT STREAMS SECONDS [LICENCE]\n"
                        "       relayload pair [HOST:]PORT SECONDS THREADS [LICENCE]\n"
                        "       relayload idle [HOST:]PORT SESSIONS [LICENCE]\n");
        return 2;
    }
    int streams = atoi(argv[relay ? 3 : 2]);
    double seconds = atof(argv[relay ? 4 : 3]);
    if (streams < 1 || streams > MAX_STREAMS || seconds <= 0) {
        fprintf(stderr, "relayload: 1..%d streams and a positive duration\n", MAX_STREAMS);
        return 2;
    }
    int senders[MAX_STREAMS], receivers[MAX_STREAMS];
    pthread_t threads[2 * MAX_STREAMS];
    if (relay)
        relay_pairs(parse_target(argv[2]), streams, argc > 5 ? argv[5] : "", senders, receivers);
    else if (spliced)
        spliced_pairs(streams, senders, receivers);
    else
        direct_pairs(streams, senders, receivers);
    for (int i = 0; i < streams; i++) {
        pthread_create(&threads[2 * i], NULL, receiver, (void *)(long)receivers[i]);
        pthread_create(&threads[2 * i + 1], NULL, sender, (void *)(long)senders[i]);
    }
    pause_for(0.5);
    unsigned long long start_bytes = atomic_load(&received);
    double start = now(), cpu_start = cpu_now(), relay_start = 0, relay_cpu = 0;
    for (int i = 0; spliced && i < streams; i++) relay_start += thread_cpu(relays[i]);
    pause_for(seconds);
    unsigned long long bytes = atomic_load(&received) - start_bytes;
    double elapsed = now() - start;
    for (int i = 0; spliced && i < streams; i++) relay_cpu += thread_cpu(relays[i]);
    relay_cpu = (relay_cpu - relay_start) / elapsed;
    double cpu = (cpu_now() - cpu_start) / elapsed - relay_cpu;
    atomic_store(&stopping, 1);
    for (int i = 0; i < streams; i++) {
        shutdown(senders[i], SHUT_RDWR);
        shutdown(receivers[i], SHUT_RDWR);
    }
    for (int i = 0; i < 2 * streams; i++) pthread_join(threads[i], NULL);
    printf("bytes=%llu seconds=%.3f gbps=%.3f cpu=%.3f relay_cpu=%.3f\n", bytes, elapsed,
           bytes / elapsed / 1e9, cpu, relay_cpu);
    return bytes > 0 ? 0 : 1;
}
