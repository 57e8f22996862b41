/* Punch-flow load generator for an hbbs-compatible server, compiled by bench/.
 *
 *   punchload HOST PORT LICENCE plain|secure RATE|wWINDOW SECONDS [LIBSODIUM]
 *
 * One controlled peer B registers over UDP from 127.5.0.1 (RegisterPk, then
 * RegisterPeer until request_pk is false).  Then controlling sides A, each a
 * new TCP connection, run the whole flow of PROTOCOL.md 4.3:
 *
 *   A -> S  PunchHoleRequest{id: B, nat_type, licence_key, version}
 *   S -> B  PunchHole{socket_addr: A} over UDP
 *   B -> S  PunchHoleSent{socket_addr (echoed), id, nat_type, version}, on a new TCP connection
 *   S -> A  PunchHoleResponse{socket_addr: B, pk: signed IdPk, ...}
 *
 * plain:  A sends at once and skips the server's leading KeyExchange, like a
 *         client that is not logged in.
 * secure: A waits for the KeyExchange, answers it (crypto_box of a fresh
 *         symmetric key to the server's ephemeral key) and sends the request
 *         and reads the reply encrypted (PROTOCOL.md section 5).  libsodium is
 *         loaded at run time (LIBSODIUM, else libsodium.so.23 / libsodium.so); the
 *         server's signature is not verified and A's X25519 pair is made once,
 *         so the generator spends its time on what the server has to answer.
 *
 * Sources: flow n's A connects from 127.4.x.y, address n % LOADGEN_SOURCES (default
 * 1000) of that pool, and B's PunchHoleSent connection from address n % LOADGEN_SOURCES
 * of 127.5.x.y, so that no source exceeds a server's per-IP limits (requests per second,
 * connections); LOADGEN_SOURCES=0 binds nothing (a server on another machine).
 *
 * RATE starts flows at a fixed rate (open loop: latency at that rate); wW keeps
 * W flows in flight (closed loop: the most flows per second).  A flow's latency
 * runs from A's connect() to the PunchHoleResponse; a flow not answered within
 * 3 s fails.  Connections are closed with SO_LINGER 0 so that thousands of
 * flows per second leave no TIME_WAIT behind.  Prints one line:
 *   started=N completed=C failed=F refused=X unexpected=U seconds=T flows_per_s=R p50_ms=
 *   p99_ms= max_ms= gen_cpu= sources=S
 * refused counts PunchHoleResponses without an address (a failure or a refusal such as
 * TOO_MANY_REQUESTS); they are failed flows too.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "loadgen.h"

#define MAX_CONNS 8192
#define FLOW_TIMEOUT 3.0
#define VERSION "1.4.2"

static struct sockaddr_in server;
static char b_id[32];
static const char *licence;
static int secure;
static atomic_int stopping, outstanding;
static atomic_ullong completed, failed, unexpected, refused, a_flows, b_flows;
static unsigned long sources;

static int (*sodium_init_)(void);
static int (*box_keypair)(unsigned char *, unsigned char *);
static int (*box_easy)(unsigned char *, const unsigned char *, unsigned long long,
                       const unsigned char *, const unsigned char *, const unsigned char *);
static int (*secretbox_easy)(unsigned char *, const unsigned char *, unsigned long long,
                             const unsigned char *, const unsigned char *);
static int (*secretbox_open_easy)(unsigned char *, const unsigned char *, unsigned long long,
                                  const unsigned char *, const unsigned char *);
static unsigned char client_pk[32], client_sk[32];

struct conn {
    int fd, in_use, state; /* state 0: waiting for KeyExchange (secure), 1: for the response */
    double started;
    unsigned char key[32];
    unsigned char buffer[4096];
    size_t filled;
};
static struct conn conns[MAX_CONNS];
static pthread_mutex_t slots = PTHREAD_MUTEX_INITIALIZER;
static double *latencies;
static size_t latency_count, latency_capacity;

/* tag (one or two bytes, given as the bytes), length, data */
static size_t put_field(unsigned char *out, const unsigned char *tag, size_t tag_length,
                        const void *data, size_t length) {
    memcpy(out, tag, tag_length);
    size_t at = tag_length + put_varint(out + tag_length, length);
    memcpy(out + at, data, length);
    return at + length;
}

static size_t put_string(unsigned char *out, unsigned char tag, const char *text) {
    return put_field(out, &tag, 1, text, strlen(text));
}

/* Read a varint at *at; returns 0 past the end. */
static unsigned long long get_varint(const unsigned char *data, size_t length, size_t *at) {
    unsigned long long value = 0;
    for (int shift = 0; *at < length && shift < 64; shift += 7) {
        unsigned char b = data[(*at)++];
        value |= (unsigned long long)(b & 0x7f) << shift;
        if (!(b & 0x80)) return value;
    }
    *at = length + 1;
    return 0;
}

/* The bytes of length-delimited field `number` of a message, or NULL. */
static const unsigned char *find_bytes(const unsigned char *data, size_t length, unsigned number,
                                       size_t *field_length) {
    size_t at = 0;
    while (at < length) {
        unsigned long long key = get_varint(data, length, &at);
        if (at > length) return NULL;
        unsigned type = key & 7;
        if (type == 0) {
            get_varint(data, length, &at);
        } else if (type == 2) {
            unsigned long long n = get_varint(data, length, &at);
            if (at > length || n > length - at) return NULL;
            if ((key >> 3) == number) {
                *field_length = n;
                return data + at;
            }
            at += n;
        } else if (type == 5) {
            at += 4;
        } else if (type == 1) {
            at += 8;
        } else {
            return NULL;
        }
    }
    return NULL;
}

/* BytesCodec frame around a payload */
static size_t frame(unsigned char *out, const unsigned char *payload, size_t length) {
    size_t header;
    if (length < 64) {
        out[0] = (unsigned char)(length << 2);
        header = 1;
    } else if (length < 16384) {
        unsigned value = (unsigned)(length << 2) | 1;
        out[0] = value & 0xff;
        out[1] = (value >> 8) & 0xff;
        header = 2;
    } else {
        unsigned value = (unsigned)(length << 2) | 2;
        out[0] = value & 0xff;
        out[1] = (value >> 8) & 0xff;
        out[2] = (value >> 16) & 0xff;
        header = 3;
    }
    memcpy(out + header, payload, length);
    return header + length;
}

static void send_all(int fd, const unsigned char *data, size_t length) {
    while (length > 0) {
        ssize_t n = send(fd, data, length, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            return;
        }
        data += n;
        length -= (size_t)n;
    }
}

static void close_now(int fd) {
    struct linger linger = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, sizeof linger);
    close(fd);
}

/* A connection to the server from the next address of source pool `block`. */
static int tcp_connect(unsigned block, atomic_ullong *counter) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    if (sources) bind_pool(fd, block, (unsigned long)(atomic_fetch_add(counter, 1) % sources));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&server, sizeof server) < 0) {
        close_now(fd);
        return -1;
    }
    return fd;
}

static void nonce(unsigned char out[24], unsigned long long n) {
    memset(out, 0, 24);
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)(n >> (8 * i));
}

/* RendezvousMessage{punch_hole_request(8){id, nat_type: ASYMMETRIC, licence_key, version}} */
static size_t punch_hole_request(unsigned char *out) {
    unsigned char inner[512];
    size_t length = put_string(inner, 0x0a, b_id);
    inner[length++] = 0x10;
    inner[length++] = 1;
    if (*licence) length += put_string(inner + length, 0x1a, licence);
    length += put_string(inner + length, 0x32, VERSION);
    unsigned char tag = 0x42;
    return put_field(out, &tag, 1, inner, length);
}

/* ---- B: the controlled peer ---- */

static int b_socket;

static void register_b(void) {
    b_socket = socket(AF_INET, SOCK_DGRAM, 0);
    if (sources) bind_pool(b_socket, 5, 0);
    struct timeval timeout = {0, 300000};
    setsockopt(b_socket, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    unsigned char inner[256], message[300], reply[512], uuid[16], pk[32];
    for (int i = 0; i < 16; i++) uuid[i] = (unsigned char)(getpid() >> (i % 3)) ^ (unsigned char)i;
    for (int i = 0; i < 32; i++) pk[i] = (unsigned char)(i * 7 + getpid());
    size_t length = put_string(inner, 0x0a, b_id);
    unsigned char tag = 0x12;
    length += put_field(inner + length, &tag, 1, uuid, 16);
    tag = 0x1a;
    length += put_field(inner + length, &tag, 1, pk, 32);
    tag = 0x7a;
    size_t pk_length = put_field(message, &tag, 1, inner, length);
    unsigned char peer_message[64];
    length = put_string(inner, 0x0a, b_id);
    inner[length++] = 0x10;
    inner[length++] = 3;
    tag = 0x32;
    size_t peer_length = put_field(peer_message, &tag, 1, inner, length);
    for (int attempt = 0; attempt < 40; attempt++) {
        sendto(b_socket, message, pk_length, 0, (struct sockaddr *)&server, sizeof server);
        pause_for(0.05);
        sendto(b_socket, peer_message, peer_length, 0, (struct sockaddr *)&server, sizeof server);
        for (;;) {
            ssize_t n = recv(b_socket, reply, sizeof reply, 0);
            if (n < 0) break;
            if (n == 2 && reply[0] == 0x3a && reply[1] == 0x00) {
                struct timeval none = {0, 0};
                setsockopt(b_socket, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
                return;
            }
        }
    }
    fprintf(stderr, "punchload: B could not register (no RegisterPeerResponse{request_pk: false})\n");
    exit(3);
}

static void *b_loop(void *unused) {
    (void)unused;
    unsigned char datagram[2048], inner[512], payload[600], out[620], drain[512];
    int epoll = epoll_create1(0);
    struct epoll_event event = {.events = EPOLLIN, .data.fd = b_socket};
    epoll_ctl(epoll, EPOLL_CTL_ADD, b_socket, &event);
    struct timeval poll_timeout = {0, 100000};
    setsockopt(b_socket, SOL_SOCKET, SO_RCVTIMEO, &poll_timeout, sizeof poll_timeout);
    struct epoll_event events[64];
    while (!atomic_load(&stopping)) {
        int ready = epoll_wait(epoll, events, 64, 100);
        for (int e = 0; e < ready; e++) {
            int fd = events[e].data.fd;
            if (fd != b_socket) {
                /* B's one-shot connection: drain the KeyExchange; close at EOF. */
                ssize_t n = recv(fd, drain, sizeof drain, MSG_DONTWAIT);
                if (n == 0 || (n < 0 && errno != EAGAIN)) {
                    epoll_ctl(epoll, EPOLL_CTL_DEL, fd, NULL);
                    close_now(fd);
                }
                continue;
            }
            ssize_t n = recv(b_socket, datagram, sizeof datagram, MSG_DONTWAIT);
            if (n <= 2) continue;
            size_t at = 1;
            if (datagram[0] != 0x4a) { /* PunchHole */
                atomic_fetch_add(&unexpected, 1);
                continue;
            }
            unsigned long long length = get_varint(datagram, (size_t)n, &at);
            if (at > (size_t)n || length > (size_t)n - at) continue;
            size_t address_length = 0;
            const unsigned char *address =
                find_bytes(datagram + at, (size_t)length, 1, &address_length);
            if (address == NULL || address_length > 64) continue;
            /* PunchHoleSent{socket_addr, id, nat_type: ASYMMETRIC, version} */
            unsigned char tag = 0x0a;
            size_t inner_length = put_field(inner, &tag, 1, address, address_length);
            inner_length += put_string(inner + inner_length, 0x12, b_id);
            inner[inner_length++] = 0x20;
            inner[inner_length++] = 1;
            inner_length += put_string(inner + inner_length, 0x2a, VERSION);
            tag = 0x52;
            size_t payload_length = put_field(payload, &tag, 1, inner, inner_length);
            int tcp = tcp_connect(5, &b_flows);
            if (tcp < 0) continue;
            send_all(tcp, out, frame(out, payload, payload_length));
            fcntl(tcp, F_SETFL, O_NONBLOCK);
            struct epoll_event watch = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = tcp};
            epoll_ctl(epoll, EPOLL_CTL_ADD, tcp, &watch);
        }
    }
    return NULL;
}

/* ---- A: the controlling sides ---- */

static int a_epoll;

static void finish(struct conn *c, int ok) {
    double latency = now() - c->started;
    epoll_ctl(a_epoll, EPOLL_CTL_DEL, c->fd, NULL);
    close_now(c->fd);
    pthread_mutex_lock(&slots);
    if (ok && latency_count < latency_capacity) latencies[latency_count++] = latency;
    c->in_use = 0;
    pthread_mutex_unlock(&slots);
    atomic_fetch_add(ok ? &completed : &failed, 1);
    atomic_fetch_sub(&outstanding, 1);
}

static void start_flow(void) {
    struct conn *c = NULL;
    pthread_mutex_lock(&slots);
    for (int i = 0; i < MAX_CONNS; i++) {
        if (!conns[i].in_use) {
            c = &conns[i];
            c->in_use = 1;
            c->fd = -1;
            c->started = now();
            break;
        }
    }
    pthread_mutex_unlock(&slots);
    atomic_fetch_add(&outstanding, 1);
    if (c == NULL) {
        atomic_fetch_add(&failed, 1);
        atomic_fetch_sub(&outstanding, 1);
        return;
    }
    c->started = now();
    c->filled = 0;
    c->state = secure ? 0 : 1;
    c->fd = tcp_connect(4, &a_flows);
    if (c->fd < 0) {
        pthread_mutex_lock(&slots);
        c->in_use = 0;
        pthread_mutex_unlock(&slots);
        atomic_fetch_add(&failed, 1);
        atomic_fetch_sub(&outstanding, 1);
        return;
    }
    if (!secure) {
        unsigned char payload[600], out[620];
        size_t length = punch_hole_request(payload);
        send_all(c->fd, out, frame(out, payload, length));
    }
    fcntl(c->fd, F_SETFL, O_NONBLOCK);
    struct epoll_event event = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    epoll_ctl(a_epoll, EPOLL_CTL_ADD, c->fd, &event);
}

/* One frame's payload on A's connection; returns 1 when the flow is over. */
static int a_payload(struct conn *c, unsigned char *payload, size_t length) {
    if (c->state == 0) {
        size_t inner_length = 0, key_length = 0;
        if (length < 3 || payload[0] != 0xca || payload[1] != 0x01) {
            finish(c, 0);
            return 1;
        }
        size_t at = 2;
        unsigned long long n = get_varint(payload, length, &at);
        if (at > length || n > length - at) {
            finish(c, 0);
            return 1;
        }
        inner_length = (size_t)n;
        const unsigned char *signed_key = find_bytes(payload + at, inner_length, 1, &key_length);
        if (signed_key == NULL || key_length != 96) {
            finish(c, 0);
            return 1;
        }
        unsigned char zero[24] = {0}, sealed[48], keys[200], message[220], out[240];
        unsigned char request[600], encrypted[640];
        for (int i = 0; i < 32; i++) c->key[i] = (unsigned char)rand();
        box_easy(sealed, c->key, 32, zero, signed_key + 64, client_sk);
        unsigned char tag = 0x0a;
        size_t keys_length = put_field(keys, &tag, 1, client_pk, 32);
        keys_length += put_field(keys + keys_length, &tag, 1, sealed, 48);
        unsigned char kx_tag[2] = {0xca, 0x01};
        size_t message_length = put_field(message, kx_tag, 2, keys, keys_length);
        send_all(c->fd, out, frame(out, message, message_length));
        size_t request_length = punch_hole_request(request);
        unsigned char n1[24];
        nonce(n1, 1);
        secretbox_easy(encrypted, request, request_length, n1, c->key);
        unsigned char framed[700];
        send_all(c->fd, framed, frame(framed, encrypted, request_length + 16));
        c->state = 1;
        return 0;
    }
    unsigned char plain[4096];
    if (secure) {
        if (length <= 16 || length - 16 > sizeof plain) return 0;
        unsigned char n1[24];
        nonce(n1, 1);
        if (secretbox_open_easy(plain, payload, length, n1, c->key) != 0) {
            finish(c, 0);
            return 1;
        }
        payload = plain;
        length -= 16;
    }
    if (length >= 2 && payload[0] == 0xca && payload[1] == 0x01) return 0; /* skip KeyExchange */
    if (length >= 1 && payload[0] == 0x5a) {                                  /* PunchHoleResponse */
        size_t at = 1, address_length = 0;
        unsigned long long n = get_varint(payload, length, &at);
        int well_formed = at <= length && n <= length - at;
        int ok = well_formed && find_bytes(payload + at, (size_t)n, 1, &address_length) != NULL &&
                 address_length > 0;
        if (well_formed && !ok) atomic_fetch_add(&refused, 1);
        finish(c, ok);
        return 1;
    }
    atomic_fetch_add(&unexpected, 1);
    finish(c, 0);
    return 1;
}

static void *a_loop(void *unused) {
    (void)unused;
    struct epoll_event events[256];
    double last_sweep = now();
    while (!atomic_load(&stopping) || atomic_load(&outstanding) > 0) {
        int ready = epoll_wait(a_epoll, events, 256, 20);
        for (int e = 0; e < ready; e++) {
            struct conn *c = events[e].data.ptr;
            ssize_t n = recv(c->fd, c->buffer + c->filled, sizeof c->buffer - c->filled, 0);
            if (n <= 0) {
                if (n < 0 && errno == EAGAIN) continue;
                finish(c, 0);
                continue;
            }
            c->filled += (size_t)n;
            for (;;) {
                if (c->filled < 1) break;
                size_t header = (c->buffer[0] & 3) + 1;
                if (c->filled < header) break;
                size_t value = 0;
                for (size_t i = 0; i < header; i++) value |= (size_t)c->buffer[i] << (8 * i);
                size_t length = value >> 2;
                if (header + length > sizeof c->buffer) {
                    finish(c, 0);
                    break;
                }
                if (c->filled < header + length) break;
                unsigned char payload[4096];
                memcpy(payload, c->buffer + header, length);
                memmove(c->buffer, c->buffer + header + length, c->filled - header - length);
                c->filled -= header + length;
                if (a_payload(c, payload, length)) break;
            }
        }
        double t = now();
        if (t - last_sweep > 0.1) {
            last_sweep = t;
            for (int i = 0; i < MAX_CONNS; i++) {
                if (conns[i].in_use && conns[i].fd >= 0 && t - conns[i].started > FLOW_TIMEOUT)
                    finish(&conns[i], 0);
            }
        }
    }
    return NULL;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void load_sodium(const char *path) {
    const char *names[] = {path, "libsodium.so.23", "libsodium.so", NULL};
    void *library = NULL;
    for (int i = 0; i < 4 && library == NULL; i++)
        if (names[i] && *names[i]) library = dlopen(names[i], RTLD_NOW);
    if (library == NULL) {
        fprintf(stderr, "punchload: secure mode needs libsodium\n");
        exit(4);
    }
    sodium_init_ = (int (*)(void))dlsym(library, "sodium_init");
    box_keypair = dlsym(library, "crypto_box_keypair");
    box_easy = dlsym(library, "crypto_box_easy");
    secretbox_easy = dlsym(library, "crypto_secretbox_easy");
    secretbox_open_easy = dlsym(library, "crypto_secretbox_open_easy");
    if (!sodium_init_ || !box_keypair || !box_easy || !secretbox_easy || !secretbox_open_easy) {
        fprintf(stderr, "punchload: libsodium lacks a symbol\n");
        exit(4);
    }
    if (sodium_init_() < 0) exit(4);
    box_keypair(client_pk, client_sk);
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: punchload HOST PORT LICENCE plain|secure RATE|wWINDOW SECONDS "
                        "[LIBSODIUM]\n");
        return 2;
    }
    server.sin_family = AF_INET;
    server.sin_port = htons(atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &server.sin_addr) != 1) {
        fprintf(stderr, "punchload: HOST must be an IPv4 address\n");
        return 2;
    }
    licence = argv[3];
    secure = strcmp(argv[4], "secure") == 0;
    int window = argv[5][0] == 'w' ? atoi(argv[5] + 1) : 0;
    double rate = window ? 0 : atof(argv[5]);
    double seconds = atof(argv[6]);
    if ((window < 1 && rate <= 0) || window > MAX_CONNS / 2 || seconds <= 0) {
        fprintf(stderr, "punchload: a positive RATE or window, and SECONDS\n");
        return 2;
    }
    sources = loadgen_sources(1000);
    if (secure) load_sodium(argc > 7 ? argv[7] : NULL);
    snprintf(b_id, sizeof b_id, "pb%d%ld", (int)getpid(), (long)time(NULL) % 100000);
    latency_capacity = (size_t)((window ? 200000.0 : rate) * seconds) + 1024;
    latencies = malloc(latency_capacity * sizeof *latencies);
    register_b();
    a_epoll = epoll_create1(0);
    pthread_t b_thread, a_thread;
    pthread_create(&b_thread, NULL, b_loop, NULL);
    pthread_create(&a_thread, NULL, a_loop, NULL);
    double cpu_start = cpu_now(), start = now();
    unsigned long long started = 0;
    for (;;) {
        double elapsed = now() - start;
        if (elapsed >= seconds) break;
        if (window) {
            if (atomic_load(&outstanding) >= window) {
                pause_for(0.00005);
                continue;
            }
        } else if ((double)started >= elapsed * rate) {
            pause_for(0.0002);
            continue;
        }
        start_flow();
        started++;
    }
    double sending = now() - start;
    for (int i = 0; i < 400 && atomic_load(&outstanding) > 0; i++) pause_for(0.01);
    atomic_store(&stopping, 1);
    pthread_join(a_thread, NULL);
    double wall = now() - start;
    double cpu = cpu_now() - cpu_start;
    pthread_join(b_thread, NULL);
    qsort(latencies, latency_count, sizeof *latencies, by_value);
    double p50 = latency_count ? latencies[latency_count / 2] : 0;
    double p99 = latency_count ? latencies[(size_t)(latency_count * 0.99)] : 0;
    double max = latency_count ? latencies[latency_count - 1] : 0;
    printf("started=%llu completed=%llu failed=%llu refused=%llu unexpected=%llu seconds=%.3f "
           "flows_per_s=%.1f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f gen_cpu=%.3f sources=%lu\n",
           started, (unsigned long long)atomic_load(&completed),
           (unsigned long long)atomic_load(&failed), (unsigned long long)atomic_load(&refused),
           (unsigned long long)atomic_load(&unexpected), sending, atomic_load(&completed) / sending,
           p50 * 1e3, p99 * 1e3, max * 1e3, cpu / wall, sources);
    return atomic_load(&completed) > 0 ? 0 : 1;
}
