/* Loopback TCP load generator for hbbr, compiled by bench/relay.py.
 *
 *   relayload direct STREAMS SECONDS
 *   relayload relay PORT STREAMS SECONDS [LICENCE]
 *
 * direct: STREAMS sender->receiver TCP pairs on 127.0.0.1, no relay (the ceiling).
 * relay:  STREAMS pairs through hbbr on 127.0.0.1:PORT; each side first sends a
 *         framed RendezvousMessage{request_relay{uuid, licence_key}}, then the
 *         sender blasts bytes and the receiver counts them.
 * One sender and one receiver thread per stream, so the client is never the
 * bottleneck a Python client is.  After a 0.5 s warm-up the received bytes are
 * counted for SECONDS; prints "bytes=N seconds=T gbps=G".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUFFER (256 * 1024)
#define MAX_STREAMS 64

static atomic_ullong received;
static atomic_int stopping;

static void die(const char *what) {
    perror(what);
    exit(2);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void pause_for(double seconds) {
    struct timespec ts = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static int connect_to(int port) {
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0) die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
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
    size_t value = length;
    do {
        out[at] = value & 0x7f;
        value >>= 7;
        if (value) out[at] |= 0x80;
        at++;
    } while (value);
    memcpy(out + at, text, length);
    return at + length;
}

/* The BytesCodec frame of RendezvousMessage{request_relay(18){uuid(2), licence_key(9)}}. */
static void request_relay(int fd, const char *uuid, const char *licence) {
    unsigned char inner[512], payload[600], frame[604];
    size_t inner_length = put_field(inner, 0x12, uuid);
    if (*licence) inner_length += put_field(inner + inner_length, 0x4a, licence);
    size_t at = 0;
    payload[at++] = 0x92;
    payload[at++] = 0x01;
    size_t value = inner_length;
    do {
        payload[at] = value & 0x7f;
        value >>= 7;
        if (value) payload[at] |= 0x80;
        at++;
    } while (value);
    memcpy(payload + at, inner, inner_length);
    size_t length = at + inner_length;
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
    while (!atomic_load(&stopping)) {
        if (send(fd, buffer, BUFFER, MSG_NOSIGNAL) < 0) break;
    }
    free(buffer);
    return NULL;
}

static void *receiver(void *arg) {
    int fd = (int)(long)arg;
    unsigned char *buffer = malloc(BUFFER);
    for (;;) {
        ssize_t n = recv(fd, buffer, BUFFER, 0);
        if (n <= 0) break;
        atomic_fetch_add(&received, (unsigned long long)n);
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
        senders[i] = connect_to(ntohs(address.sin_port));
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
        receivers[i] = connect_to(port);
        request_relay(receivers[i], uuid, licence);
        senders[i] = connect_to(port);
        request_relay(senders[i], uuid, licence);
    }
}

int main(int argc, char **argv) {
    int relay = argc >= 5 && strcmp(argv[1], "relay") == 0;
    if (!relay && !(argc == 4 && strcmp(argv[1], "direct") == 0)) {
        fprintf(stderr, "usage: relayload direct STREAMS SECONDS\n"
                        "       relayload relay PORT STREAMS SECONDS [LICENCE]\n");
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
        relay_pairs(atoi(argv[2]), streams, argc > 5 ? argv[5] : "", senders, receivers);
    else
        direct_pairs(streams, senders, receivers);
    for (int i = 0; i < streams; i++) {
        pthread_create(&threads[2 * i], NULL, receiver, (void *)(long)receivers[i]);
        pthread_create(&threads[2 * i + 1], NULL, sender, (void *)(long)senders[i]);
    }
    pause_for(0.5);
    unsigned long long start_bytes = atomic_load(&received);
    double start = now();
    pause_for(seconds);
    unsigned long long bytes = atomic_load(&received) - start_bytes;
    double elapsed = now() - start;
    atomic_store(&stopping, 1);
    for (int i = 0; i < streams; i++) {
        shutdown(senders[i], SHUT_RDWR);
        shutdown(receivers[i], SHUT_RDWR);
    }
    for (int i = 0; i < 2 * streams; i++) pthread_join(threads[i], NULL);
    printf("bytes=%llu seconds=%.3f gbps=%.3f\n", bytes, elapsed, bytes / elapsed / 1e9);
    return bytes > 0 ? 0 : 1;
}
