/* UDP registration load generator for an hbbs-compatible server, compiled by bench/.
 *
 *   udpload pk   HOST PORT PREFIX COUNT SOCKETS RATE
 *   udpload peer HOST PORT PREFIX COUNT SOCKETS SECONDS RATE[,RATE...]
 *   udpload new  HOST PORT PREFIX PER_SOURCE FIRST_SOURCE SECONDS RATE[,RATE...]
 *   udpload echo PORT [HOST]   (the C ceiling: answers every datagram with 3a 00; HOST
 *                              default 127.0.0.1)
 *
 * Peer i has the id PREFIX<i> and always sends from socket i % SOCKETS, so its
 * registered address stays the same.  Socket s is bound to its own source address,
 * 127.2.(s/250).(s%250+1) (loadgen.h: pool_address), so each simulated machine has
 * its own IP as well as its own port and no source exceeds a server's per-IP limits;
 * LOADGEN_SOURCES=0 leaves the choice to the kernel (a server on another machine).
 *
 * pk:   RegisterPk{id, uuid(16), pk(32)} once per id, at RATE/s (then a 1 s drain).
 * peer: RegisterPeer{id, serial: 3} round-robin over the ids at each RATE for
 *       SECONDS (SECONDS 0: exactly COUNT datagrams, one per id), each step
 *       followed by a 0.3 s drain; a datagram not answered by then is lost.
 * new:  at each RATE, RATE * SECONDS RegisterPk of ids never registered before
 *       (PREFIX<step>_<i>), each with its own uuid and 32-byte pk, from fresh source
 *       addresses (number FIRST_SOURCE on of the pool at 127.16.0.1; pass the sum of the
 *       earlier sources= to reuse none in a run), at most PER_SOURCE ids per address; a
 *       1 s drain; an answer later than that counts as lost.
 *
 * UDPLOAD_SENDERS (default 2) sender threads pace by the clock, each owning a
 * share of the ids; one receiver thread takes the replies from every socket
 * (epoll, recvmmsg).  One line per step:
 *   rate=R sent=S answered=A request_pk=P ok=O too_frequent=F refused=X lost_pct=L
 *   seconds=T achieved=R gen_cpu=C sources=N
 * ok / too_frequent / refused count RegisterPkResponse results (OK, TOO_FREQUENT, any
 * other); gen_cpu is this process's CPU time over the step's wall time, in cores.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
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

static int *sockets;
static int socket_count, epoll_fd;
static struct sockaddr_in server;
static atomic_ullong answered, request_pk, pk_ok, pk_too_frequent, pk_refused;
static atomic_int stopping;

enum { RESULT_TOO_FREQUENT = 4 };

static size_t put_bytes(unsigned char *out, unsigned tag, const void *data, size_t length) {
    size_t at = 0;
    out[at++] = (unsigned char)tag;
    at += put_varint(out + at, length);
    memcpy(out + at, data, length);
    return at + length;
}

/* RendezvousMessage{register_peer(6){id(1), serial(2): 3}} */
static size_t register_peer(unsigned char *out, const char *id) {
    unsigned char inner[128];
    size_t length = put_bytes(inner, 0x0a, id, strlen(id));
    inner[length++] = 0x10;
    inner[length++] = 3;
    return put_bytes(out, 0x32, inner, length);
}

/* RendezvousMessage{register_pk(15){id(1), uuid(2), pk(3)}} */
static size_t register_pk(unsigned char *out, const char *id, unsigned long long i) {
    unsigned char inner[256], uuid[16], pk[32];
    for (int k = 0; k < 16; k++) uuid[k] = (unsigned char)((i >> (8 * (k % 8))) ^ (0x5a + k));
    for (int k = 0; k < 32; k++) pk[k] = (unsigned char)((i >> (8 * (k % 8))) ^ (0xa5 + 3 * k));
    size_t length = put_bytes(inner, 0x0a, id, strlen(id));
    length += put_bytes(inner + length, 0x12, uuid, sizeof uuid);
    length += put_bytes(inner + length, 0x1a, pk, sizeof pk);
    out[0] = 0x7a;
    size_t at = 1 + put_varint(out + 1, length);
    memcpy(out + at, inner, length);
    return at + length;
}

/* RegisterPkResponse{result(1), keep_alive(2)}: an absent result is OK (0). */
static void count_pk_result(const unsigned char *b, unsigned length) {
    unsigned result = 0;
    for (unsigned at = 3; at + 1 < length && at < 3u + b[2]; at += 2)
        if (b[at] == 0x08) result = b[at + 1];
    atomic_fetch_add(result == 0 ? &pk_ok : result == RESULT_TOO_FREQUENT ? &pk_too_frequent
                                                                          : &pk_refused, 1);
}

static void *receiver(void *unused) {
    (void)unused;
    enum { BATCH = 32 };
    struct epoll_event events[1024];
    static unsigned char buffers[BATCH][64];
    struct mmsghdr messages[BATCH];
    struct iovec iov[BATCH];
    while (!atomic_load(&stopping)) {
        int ready = epoll_wait(epoll_fd, events, 1024, 50);
        for (int e = 0; e < ready; e++) {
            for (int k = 0; k < BATCH; k++) {
                iov[k] = (struct iovec){buffers[k], sizeof buffers[k]};
                messages[k].msg_hdr = (struct msghdr){.msg_iov = &iov[k], .msg_iovlen = 1};
            }
            int n = recvmmsg(events[e].data.fd, messages, BATCH, MSG_DONTWAIT, NULL);
            for (int k = 0; k < n; k++) {
                const unsigned char *b = buffers[k];
                unsigned length = messages[k].msg_len;
                /* RegisterPeerResponse{request_pk: true} is 3a 02 10 01; every
                 * RegisterPeerResponse and RegisterPkResponse is an answer. */
                if (length >= 2 && (b[0] == 0x3a || (b[0] == 0x82 && b[1] == 0x01))) {
                    atomic_fetch_add(&answered, 1);
                    if (b[0] == 0x3a && length == 4 && b[3] == 1) atomic_fetch_add(&request_pk, 1);
                    if (b[0] == 0x82 && length >= 3) count_pk_result(b, length);
                }
            }
        }
        /* Let replies gather: fewer wake-ups and more datagrams per recvmmsg. */
        if (ready > 0) pause_for(0.0005);
    }
    return NULL;
}

/* Replace the sockets by `count` new ones, socket s bound to address first + s of pool
 * `block` (unless LOADGEN_SOURCES is 0); the receiver thread reads them all. */
static void open_sockets(int count, unsigned block, unsigned long first) {
    int spread = loadgen_sources(1) != 0;
    for (int s = 0; s < socket_count; s++) close(sockets[s]);
    free(sockets);
    sockets = calloc(count, sizeof *sockets);
    socket_count = count;
    for (int s = 0; s < count; s++) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (fd < 0) die("socket");
        if (spread) bind_pool(fd, block, first + (unsigned long)s);
        struct epoll_event event = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event) < 0) die("epoll_ctl");
        sockets[s] = fd;
    }
}

struct sender_job {
    int pk, index, senders;
    const char *prefix;
    unsigned long long count, total, sent;
    double rate, seconds;
};

/* Sender `index` of `senders` owns the ids i with i % senders == index. */
static void *sender(void *arg) {
    struct sender_job *job = arg;
    unsigned char datagram[512];
    char id[96];
    double start = now(), rate = job->rate / job->senders;
    unsigned long long total = job->total, sent = 0, next = job->index;
    if (total) total = total / job->senders + ((unsigned long long)job->index < total % job->senders);
    for (;;) {
        double elapsed = now() - start;
        if (total ? sent >= total : elapsed >= job->seconds) break;
        unsigned long long due = (unsigned long long)(elapsed * rate) + 1;
        if (sent >= due) {
            pause_for(0.0002);
            continue;
        }
        for (int burst = 0; burst < 64 && sent < due && (total == 0 || sent < total); burst++) {
            unsigned long long i = next;
            next += job->senders;
            if (next >= job->count) next = job->index;
            snprintf(id, sizeof id, "%s%llu", job->prefix, i);
            size_t length = job->pk ? register_pk(datagram, id, i) : register_peer(datagram, id);
            int fd = sockets[i % (unsigned long long)socket_count];
            if (sendto(fd, datagram, length, 0, (struct sockaddr *)&server, sizeof server) < 0 &&
                errno != EAGAIN && errno != ECONNREFUSED && errno != ENOBUFS)
                die("sendto");
            sent++;
        }
    }
    job->sent = sent;
    return NULL;
}

/* Send `total` datagrams (or for `seconds` when total is 0) at `rate`; print the step line. */
static void step(int pk, const char *prefix, unsigned long long count, double rate, double seconds,
                 unsigned long long total, double drain, int senders) {
    unsigned long long before_answered = atomic_load(&answered);
    unsigned long long before_pk = atomic_load(&request_pk);
    unsigned long long before_ok = atomic_load(&pk_ok);
    unsigned long long before_frequent = atomic_load(&pk_too_frequent);
    unsigned long long before_refused = atomic_load(&pk_refused);
    double cpu_start = cpu_now(), start = now();
    struct sender_job jobs[16];
    pthread_t threads[16];
    if ((unsigned long long)senders > count) senders = (int)count;
    for (int t = 0; t < senders; t++) {
        jobs[t] = (struct sender_job){pk, t, senders, prefix, count, total, 0, rate, seconds};
        pthread_create(&threads[t], NULL, sender, &jobs[t]);
    }
    unsigned long long sent = 0;
    for (int t = 0; t < senders; t++) {
        pthread_join(threads[t], NULL);
        sent += jobs[t].sent;
    }
    double sending = now() - start;
    pause_for(drain);
    double wall = now() - start;
    unsigned long long got = atomic_load(&answered) - before_answered;
    unsigned long long asked = atomic_load(&request_pk) - before_pk;
    double lost = sent ? 100.0 * (double)(sent > got ? sent - got : 0) / (double)sent : 0;
    printf("rate=%.0f sent=%llu answered=%llu request_pk=%llu ok=%llu too_frequent=%llu "
           "refused=%llu lost_pct=%.4f seconds=%.3f achieved=%.0f gen_cpu=%.3f sources=%d\n",
           rate, sent, got, asked, atomic_load(&pk_ok) - before_ok,
           atomic_load(&pk_too_frequent) - before_frequent, atomic_load(&pk_refused) - before_refused,
           lost, sending, sent / sending, (cpu_now() - cpu_start) / wall, socket_count);
    fflush(stdout);
}

/* The ceiling: one thread answering every datagram with RegisterPeerResponse{} (3a 00),
 * 64 datagrams per recvmmsg/sendmmsg.  Runs until killed; prints "ready". */
static _Noreturn void echo_server(int port, const char *host) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) die("socket");
    int size = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &local.sin_addr) != 1) die("echo HOST");
    if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) die("bind");
    printf("ready\n");
    fflush(stdout);
    enum { BATCH = 64 };
    static unsigned char buffers[BATCH][2048];
    static const unsigned char reply[2] = {0x3a, 0x00};
    struct mmsghdr in[BATCH], out[BATCH];
    struct iovec in_iov[BATCH], out_iov[BATCH];
    struct sockaddr_in peers[BATCH];
    for (;;) {
        for (int k = 0; k < BATCH; k++) {
            in_iov[k] = (struct iovec){buffers[k], sizeof buffers[k]};
            in[k].msg_hdr = (struct msghdr){.msg_name = &peers[k], .msg_namelen = sizeof peers[k],
                                            .msg_iov = &in_iov[k], .msg_iovlen = 1};
        }
        int n = recvmmsg(fd, in, BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("recvmmsg");
        }
        for (int k = 0; k < n; k++) {
            out_iov[k] = (struct iovec){(void *)reply, sizeof reply};
            out[k].msg_hdr = (struct msghdr){.msg_name = &peers[k], .msg_namelen = in[k].msg_hdr.msg_namelen,
                                             .msg_iov = &out_iov[k], .msg_iovlen = 1};
        }
        sendmmsg(fd, out, n, 0);
    }
}

int main(int argc, char **argv) {
    if ((argc == 3 || argc == 4) && strcmp(argv[1], "echo") == 0)
        echo_server(atoi(argv[2]), argc == 4 ? argv[3] : "127.0.0.1");
    int pk = argc == 8 && strcmp(argv[1], "pk") == 0;
    int peer = argc == 9 && strcmp(argv[1], "peer") == 0;
    int fresh = argc == 9 && strcmp(argv[1], "new") == 0;
    if (!pk && !peer && !fresh) {
        fprintf(stderr, "usage: udpload pk HOST PORT PREFIX COUNT SOCKETS RATE\n"
                        "       udpload peer HOST PORT PREFIX COUNT SOCKETS SECONDS RATE[,RATE...]\n"
                        "       udpload new HOST PORT PREFIX PER_SOURCE FIRST_SOURCE SECONDS "
                        "RATE[,RATE...]\n");
        return 2;
    }
    const char *host = argv[2], *prefix = argv[4];
    server.sin_family = AF_INET;
    server.sin_port = htons(atoi(argv[3]));
    if (inet_pton(AF_INET, host, &server.sin_addr) != 1) {
        fprintf(stderr, "udpload: HOST must be an IPv4 address\n");
        return 2;
    }
    const char *threads = getenv("UDPLOAD_SENDERS");
    int senders = threads ? atoi(threads) : 2;
    if (senders < 1 || senders > 16) senders = 2;
    epoll_fd = epoll_create1(0);
    pthread_t thread;
    pthread_create(&thread, NULL, receiver, NULL);
    pthread_detach(thread);
    if (fresh) {
        unsigned long long per_source = strtoull(argv[5], NULL, 10);
        unsigned long first = strtoul(argv[6], NULL, 10);
        double seconds = atof(argv[7]);
        if (per_source < 1 || seconds <= 0) {
            fprintf(stderr, "udpload: PER_SOURCE >= 1 and SECONDS > 0\n");
            return 2;
        }
        char step_prefix[64];
        int index = 0;
        for (char *rate = strtok(argv[8], ","); rate; rate = strtok(NULL, ","), index++) {
            unsigned long long count = (unsigned long long)(atof(rate) * seconds + 0.5);
            unsigned long long sources = (count + per_source - 1) / per_source;
            if (count < 1 || sources > 60000) {
                fprintf(stderr, "udpload: RATE * SECONDS must be 1..%llu\n", 60000 * per_source);
                return 2;
            }
            open_sockets((int)sources, 16, first);
            first += (unsigned long)sources;
            snprintf(step_prefix, sizeof step_prefix, "%s%d_", prefix, index);
            step(1, step_prefix, count, atof(rate), 0, count, 1.0, senders);
        }
        atomic_store(&stopping, 1);
        return 0;
    }
    unsigned long long count = strtoull(argv[5], NULL, 10);
    int socket_total = atoi(argv[6]);
    if (count < 1 || socket_total < 1 || socket_total > 60000) {
        fprintf(stderr, "udpload: COUNT >= 1 and 1..60000 SOCKETS\n");
        return 2;
    }
    if ((unsigned long long)socket_total > count) socket_total = (int)count;
    open_sockets(socket_total, 2, 0);
    if (pk) {
        step(1, prefix, count, atof(argv[7]), 0, count, 1.0, 1);
    } else {
        double seconds = atof(argv[7]);
        for (char *rate = strtok(argv[8], ","); rate; rate = strtok(NULL, ","))
            step(0, prefix, count, atof(rate), seconds, seconds > 0 ? 0 : count, 0.3, senders);
    }
    atomic_store(&stopping, 1);
    return 0;
}
