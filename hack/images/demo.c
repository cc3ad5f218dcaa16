/* edgeweave demo workload: a client/server pair that talks TCP, and a Prometheus endpoint.
 *
 *   demo server               listen on $PORT (default 7000); every request is a 4-byte big-endian length
 *                             then that many bytes; the reply is the 8-byte running total this server has
 *                             received (its state).
 *   demo client               connect to $SERVER_HOST:$SERVER_PORT (default: the demo-server Service env
 *                             vars kubelet injects), send $REQUEST_BYTES per request every $INTERVAL_MS.
 *
 * Both serve /metrics on $METRICS_PORT (default 9100). The client exports what it actually sent and had
 * acknowledged as edgeweave_flow_bytes_total{source_workload=$SOURCE_WORKLOAD,
 * destination_workload=$DESTINATION_WORKLOAD, namespace=$POD_NAMESPACE} (the series the operator's default
 * dependency query reads), plus demo_requests_total and demo_failed_requests_total.
 *
 * Graceful stop (what a PDB-protected replica needs for no failed request during a move): on SIGTERM the
 * server keeps serving for $DRAIN_MS (default 1500, inside the pod's grace period) while kube-proxy drops
 * it from the Service, and marks each reply "going away" (top bit of the total); the client then closes
 * that connection after the ack and dials again through the Service, so it lands on a live replica.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile uint64_t bytes_acked, requests_ok, requests_failed, bytes_received, connections;
static volatile sig_atomic_t draining;
#define GOING_AWAY (1ull << 63)
/* Longest time between two acknowledged requests, in microseconds: the serving gap a move causes. */
static volatile uint64_t max_gap_us;
static const char *role;

static const char *env(const char *k, const char *dflt) {
    const char *v = getenv(k);
    return v && *v ? v : dflt;
}

static int full_io(int fd, void *buf, size_t n, int write_) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = write_ ? send(fd, (char *)buf + done, n - done, MSG_NOSIGNAL)
                           : recv(fd, (char *)buf + done, n - done, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        done += (size_t)r;
    }
    return 0;
}

static int listen_on(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 64)) {
        perror("listen");
        exit(1);
    }
    return fd;
}

static void *metrics(void *arg) {
    int lfd = listen_on(atoi(env("METRICS_PORT", "9100")));
    (void)arg;
    for (;;) {
        int c = accept(lfd, NULL, NULL);
        char req[1024], body[2048], head[256];
        if (c < 0) continue;
        struct timeval tv = {.tv_sec = 2};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        (void)!recv(c, req, sizeof req, 0);
        int n;
        if (role[0] == 'c')
            n = snprintf(body, sizeof body,
                         "# TYPE edgeweave_flow_bytes_total counter\n"
                         "edgeweave_flow_bytes_total{source_workload=\"%s\",destination_workload=\"%s\","
                         "namespace=\"%s\"} %llu\n"
                         "# TYPE demo_requests_total counter\ndemo_requests_total %llu\n"
                         "# TYPE demo_failed_requests_total counter\ndemo_failed_requests_total %llu\n"
                         "# TYPE demo_max_gap_seconds gauge\ndemo_max_gap_seconds %.6f\n",
                         env("SOURCE_WORKLOAD", "demo-client"), env("DESTINATION_WORKLOAD", "demo-server"),
                         env("POD_NAMESPACE", "default"), (unsigned long long)bytes_acked,
                         (unsigned long long)requests_ok, (unsigned long long)requests_failed,
                         (double)max_gap_us / 1e6);
        else
            n = snprintf(body, sizeof body,
                         "# TYPE demo_server_received_bytes_total counter\ndemo_server_received_bytes_total %llu\n"
                         "# TYPE demo_server_connections_total counter\ndemo_server_connections_total %llu\n",
                         (unsigned long long)bytes_received, (unsigned long long)connections);
        int h = snprintf(head, sizeof head,
                         "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: %d\r\n\r\n", n);
        full_io(c, head, (size_t)h, 1);
        full_io(c, body, (size_t)n, 1);
        close(c);
    }
    return NULL;
}

static void *serve_conn(void *arg) {
    int c = (int)(intptr_t)arg;
    static char buf[1 << 16];  /* contents are discarded: one shared scratch buffer is enough */
    for (;;) {
        uint32_t len;
        if (full_io(c, &len, 4, 0)) break;
        len = ntohl(len);
        if (len > sizeof buf) break;
        if (full_io(c, buf, len, 0)) break;
        uint64_t total = __atomic_add_fetch(&bytes_received, len, __ATOMIC_SEQ_CST);
        if (draining) total |= GOING_AWAY;
        uint64_t be = ((uint64_t)htonl((uint32_t)(total >> 32))) | ((uint64_t)htonl((uint32_t)total) << 32);
        if (full_io(c, &be, 8, 1)) break;
    }
    close(c);
    return NULL;
}

static int server(void) {
    int lfd = listen_on(atoi(env("PORT", "7000")));
    for (;;) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0) continue;
        __atomic_add_fetch(&connections, 1, __ATOMIC_SEQ_CST);
        pthread_t t;
        pthread_create(&t, NULL, serve_conn, (void *)(intptr_t)c);
        pthread_detach(t);
    }
}

static int dial(void) {
    const char *host = env("SERVER_HOST", env("DEMO_SERVER_SERVICE_HOST", "127.0.0.1"));
    const char *port = env("SERVER_PORT", env("DEMO_SERVER_SERVICE_PORT", "7000"));
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(host, port, &hints, &res)) return -1;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = connect(fd, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    if (rc) {
        close(fd);
        return -1;
    }
    return fd;
}

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int client(void) {
    uint32_t size = (uint32_t)atoi(env("REQUEST_BYTES", "65536"));
    long interval_ms = atol(env("INTERVAL_MS", "10"));
    char *buf = calloc(1, size);
    int fd = -1;
    uint64_t last_ok = 0;
    if (size > (1 << 16)) size = 1 << 16;
    for (;;) {
        if (fd < 0 && (fd = dial()) < 0) {
            __atomic_add_fetch(&requests_failed, 1, __ATOMIC_SEQ_CST);
            usleep(200 * 1000);
            continue;
        }
        uint32_t be = htonl(size);
        uint64_t total;
        if (full_io(fd, &be, 4, 1) || full_io(fd, buf, size, 1) || full_io(fd, &total, 8, 0)) {
            __atomic_add_fetch(&requests_failed, 1, __ATOMIC_SEQ_CST);
            close(fd);
            fd = -1;
            continue;
        }
        uint64_t now = now_us();
        if (last_ok && now - last_ok > max_gap_us) max_gap_us = now - last_ok;
        last_ok = now;
        __atomic_add_fetch(&requests_ok, 1, __ATOMIC_SEQ_CST);
        __atomic_add_fetch(&bytes_acked, size, __ATOMIC_SEQ_CST);
        if (((const unsigned char *)&total)[0] & 0x80u) {  /* on the wire, the top bit is in byte 0 */
            close(fd);
            fd = -1;
        }
        if (interval_ms > 0) usleep((useconds_t)(interval_ms * 1000));
    }
}

static void quit(int sig) { (void)sig; _exit(0); }
static void drain(int sig) { (void)sig; draining = 1; }

static void *drainer(void *arg) {
    (void)arg;
    while (!draining) usleep(10 * 1000);
    usleep((useconds_t)atol(env("DRAIN_MS", "1500")) * 1000);
    _exit(0);
}

int main(int argc, char **argv) {
    role = argc > 1 ? argv[1] : "server";
    signal(SIGTERM, role[0] == 'c' ? quit : drain);
    signal(SIGINT, quit);
    setvbuf(stdout, NULL, _IOLBF, 0);
    pthread_t t;
    pthread_create(&t, NULL, metrics, NULL);
    if (role[0] != 'c') {
        pthread_create(&t, NULL, drainer, NULL);
        pthread_detach(t);
    }
    printf("demo %s up\n", role);
    return role[0] == 'c' ? client() : server();
}
