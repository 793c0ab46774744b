/*
 * Load generator (and a reference echo server) for ../echo.py. Single-threaded, epoll, Linux.
 *
 *   loadgen client --port P [--host 127.0.0.1] --mode keepalive|connect [--conns N]
 *                  [--size B] [--seconds T] [--warmup W] [--timeout-ms MS]
 *   loadgen serve  --port P [--host 127.0.0.1]
 *
 * client, mode keepalive: N connections, each one a loop of "send B bytes, read B bytes back,
 *   check them, repeat" (one request in flight per connection).
 * client, mode connect: N slots, each one a loop of "connect, send B bytes, read B bytes back,
 *   check them, close" (a new connection per request).
 * Both run W seconds of untimed warm-up, then T timed seconds; then every slot finishes the
 * request it has in flight (none is started) and closes its socket gracefully (FIN: nothing is
 * left unread, so the kernel sends no RST), for at most --timeout-ms more; then the client
 * exits. A hard alarm() ends it in any case W + T + 30 s after the start.
 *
 * The bytes of every request differ (slot, sequence number and offset are mixed in), so a
 * reply that belongs to another request or another connection is caught.
 *
 * Errors (each one ends the connection; the slot reconnects after 10 ms): refused, reset, eof
 * (the server closed before the whole echo came back), mismatch (wrong bytes), timeout (no
 * complete echo within --timeout-ms of the send, or no connect within it), addrnotavail
 * (the CLIENT ran out of local ports: not the server's fault), other.
 *
 * Prints one JSON object on stdout: ops and the elapsed time of the timed window, the
 * errors by kind (over the whole run: warm-up, timed window and the final drain), the first
 * error's text, the connections opened, and this process's CPU time during the timed window.
 *
 * serve: a single-threaded epoll echo server, the ceiling of what this client can drive on
 * this machine (no runtime, no second process). Prints "loadgen-echo listening on H:P" when
 * ready; exits 0 on SIGTERM / SIGINT.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SIZE 65536
#define MAX_CONNS 4096
#define RETRY_NS 10000000LL /* 10 ms before a slot reconnects after an error */

enum kind { E_REFUSED, E_RESET, E_EOF, E_MISMATCH, E_TIMEOUT, E_ADDRNOTAVAIL, E_OTHER, E_KINDS };
static const char *kind_names[E_KINDS] = {"refused",  "reset",        "eof",  "mismatch",
                                          "timeout", "addrnotavail", "other"};

enum state { S_IDLE, S_CONNECTING, S_SENDING, S_RECEIVING, S_WAITING, S_DONE };

struct slot {
    int id;
    int fd;
    enum state state;
    uint64_t seq;
    size_t sent, received;
    int64_t deadline_ns; /* of the request (or connect) in flight */
    int64_t retry_at_ns; /* S_WAITING: when to reconnect */
    uint8_t *tx, *rx;
};

static struct {
    struct sockaddr_in addr;
    int keepalive;
    int conns;
    size_t size;
    double seconds, warmup;
    int64_t timeout_ns;
} cfg;

static int epfd;
static struct slot *slots;
static int phase; /* 0 warm-up, 1 timed, 2 drain */
static uint64_t ops_timed, ops_warmup, connects;
static uint64_t errors[E_KINDS];
static char first_error[256];

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void fill(struct slot *s) {
    uint64_t x = (s->seq * 0x9E3779B97F4A7C15ULL) ^ ((uint64_t)s->id << 40);
    for (size_t i = 0; i < cfg.size; i++) {
        s->tx[i] = (uint8_t)(x >> ((i & 7) * 8)) ^ (uint8_t)(i * 131u);
    }
}

static void close_slot(struct slot *s) {
    if (s->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, s->fd, NULL);
        close(s->fd);
        s->fd = -1;
    }
}

static void fail(struct slot *s, enum kind k, const char *detail) {
    errors[k]++;
    if (!first_error[0]) {
        snprintf(first_error, sizeof first_error, "slot %d, %s: %s", s->id, kind_names[k],
                 detail);
    }
    close_slot(s);
    if (phase == 2) {
        s->state = S_DONE;
    } else {
        s->state = S_WAITING;
        s->retry_at_ns = now_ns() + RETRY_NS;
    }
}

static enum kind kind_of_errno(int e) {
    switch (e) {
    case ECONNREFUSED: return E_REFUSED;
    case ECONNRESET:
    case EPIPE: return E_RESET;
    case ETIMEDOUT: return E_TIMEOUT;
    case EADDRNOTAVAIL:
    case EADDRINUSE: return E_ADDRNOTAVAIL;
    default: return E_OTHER;
    }
}

static void fail_errno(struct slot *s, const char *where, int e) {
    char detail[160];
    snprintf(detail, sizeof detail, "%s: %s", where, strerror(e));
    fail(s, kind_of_errno(e), detail);
}

static void set_events(struct slot *s, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = s};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, s->fd, &ev) < 0) die("epoll_ctl MOD");
}

static void send_some(struct slot *s);

static void start_request(struct slot *s) {
    fill(s);
    s->sent = s->received = 0;
    s->deadline_ns = now_ns() + cfg.timeout_ns;
    s->state = S_SENDING;
    send_some(s);
}

static void send_some(struct slot *s) {
    while (s->sent < cfg.size) {
        ssize_t n = send(s->fd, s->tx + s->sent, cfg.size - s->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                set_events(s, EPOLLIN | EPOLLOUT);
                return;
            }
            fail_errno(s, "send", errno);
            return;
        }
        s->sent += (size_t)n;
    }
    s->state = S_RECEIVING;
    set_events(s, EPOLLIN);
}

static void open_conn(struct slot *s) {
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        fail_errno(s, "socket", errno);
        return;
    }
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = s};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, s->fd, &ev) < 0) die("epoll_ctl ADD");
    connects++;
    s->deadline_ns = now_ns() + cfg.timeout_ns;
    if (connect(s->fd, (struct sockaddr *)&cfg.addr, sizeof cfg.addr) == 0) {
        start_request(s);
    } else if (errno == EINPROGRESS) {
        s->state = S_CONNECTING;
    } else {
        fail_errno(s, "connect", errno);
    }
}

/* A request completed: count it, then start the next one, close, or reconnect. */
static void completed(struct slot *s) {
    if (phase == 0) ops_warmup++;
    else if (phase == 1) ops_timed++;
    s->seq++;
    if (phase == 2) {
        close_slot(s); /* everything was read: a FIN, not a RST */
        s->state = S_DONE;
    } else if (cfg.keepalive) {
        start_request(s);
    } else {
        close_slot(s);
        open_conn(s);
    }
}

static void on_event(struct slot *s, uint32_t events) {
    if (s->state == S_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
        if (err) {
            fail_errno(s, "connect", err);
            return;
        }
        start_request(s);
        return;
    }
    if (s->state == S_SENDING && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        send_some(s);
        if (s->state != S_RECEIVING) return;
    }
    if (s->state == S_RECEIVING && (events & (EPOLLIN | EPOLLERR | EPOLLHUP))) {
        for (;;) {
            ssize_t n = recv(s->fd, s->rx + s->received, cfg.size - s->received, 0);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN) return;
                fail_errno(s, "recv", errno);
                return;
            }
            if (n == 0) {
                char detail[96];
                snprintf(detail, sizeof detail, "closed by the server after %zu of %zu bytes",
                         s->received, cfg.size);
                fail(s, E_EOF, detail);
                return;
            }
            s->received += (size_t)n;
            if (s->received == cfg.size) {
                if (memcmp(s->rx, s->tx, cfg.size) != 0) {
                    fail(s, E_MISMATCH, "the echo differs from what was sent");
                    return;
                }
                completed(s);
                return;
            }
        }
    }
}

static double arg_num(const char *v, const char *name) {
    char *end;
    double x = strtod(v, &end);
    if (*v == '\0' || *end != '\0') {
        fprintf(stderr, "loadgen: bad value for %s: %s\n", name, v);
        exit(2);
    }
    return x;
}

static int run_client(void) {
    slots = calloc((size_t)cfg.conns, sizeof *slots);
    if (!slots) die("calloc");
    for (int i = 0; i < cfg.conns; i++) {
        slots[i].id = i;
        slots[i].fd = -1;
        slots[i].tx = malloc(cfg.size);
        slots[i].rx = malloc(cfg.size);
        if (!slots[i].tx || !slots[i].rx) die("malloc");
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");

    int64_t t_start = now_ns();
    int64_t t_timed = t_start + (int64_t)(cfg.warmup * 1e9);
    int64_t t_end = t_timed + (int64_t)(cfg.seconds * 1e9);
    int64_t t_timed_actual = 0, t_end_actual = 0, t_drain_limit = 0;
    double cpu_timed = 0;
    int64_t next_scan = 0;
    struct epoll_event events[256];

    for (int i = 0; i < cfg.conns; i++) open_conn(&slots[i]);
    if (cfg.warmup <= 0) {
        phase = 1;
        t_timed_actual = now_ns();
        cpu_timed = cpu_s();
    }

    for (;;) {
        int64_t now = now_ns();
        if (phase == 0 && now >= t_timed) {
            phase = 1;
            t_timed_actual = now;
            cpu_timed = cpu_s();
        }
        if (phase == 1 && now >= t_end) {
            phase = 2;
            t_end_actual = now;
            cpu_timed = cpu_s() - cpu_timed;
            t_drain_limit = now + cfg.timeout_ns;
            for (int i = 0; i < cfg.conns; i++) {
                struct slot *s = &slots[i];
                if (s->state == S_WAITING || s->state == S_IDLE) s->state = S_DONE;
            }
        }
        if (phase == 2) {
            int busy = 0;
            for (int i = 0; i < cfg.conns; i++) busy += slots[i].state != S_DONE;
            if (!busy) break;
            if (now >= t_drain_limit) {
                for (int i = 0; i < cfg.conns; i++) {
                    if (slots[i].state != S_DONE) fail(&slots[i], E_TIMEOUT, "still in flight at the end");
                }
                break;
            }
        }
        if (now >= next_scan) { /* timeouts and reconnects, every ms at most */
            next_scan = now + 1000000;
            for (int i = 0; i < cfg.conns; i++) {
                struct slot *s = &slots[i];
                if (s->state == S_WAITING && now >= s->retry_at_ns) {
                    open_conn(s);
                } else if ((s->state == S_CONNECTING || s->state == S_SENDING ||
                            s->state == S_RECEIVING) &&
                           now >= s->deadline_ns) {
                    fail(s, E_TIMEOUT, s->state == S_CONNECTING ? "no connection" : "no echo");
                }
            }
        }
        int64_t wake = phase == 0 ? t_timed : phase == 1 ? t_end : t_drain_limit;
        if (next_scan < wake) wake = next_scan;
        int timeout_ms = (int)((wake - now + 999999) / 1000000);
        if (timeout_ms < 0) timeout_ms = 0;
        int n = epoll_wait(epfd, events, 256, timeout_ms);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) on_event(events[i].data.ptr, events[i].events);
    }

    double elapsed = (t_end_actual - t_timed_actual) / 1e9;
    uint64_t total_errors = 0;
    for (int k = 0; k < E_KINDS; k++) total_errors += errors[k];
    printf("{\"mode\": \"%s\", \"conns\": %d, \"size\": %zu, \"warmup_s\": %.3f, "
           "\"elapsed_s\": %.6f, \"ops\": %llu, \"warmup_ops\": %llu, \"connects\": %llu, "
           "\"cpu_s\": %.4f, \"errors\": %llu, \"error_kinds\": {",
           cfg.keepalive ? "keepalive" : "connect", cfg.conns, cfg.size, cfg.warmup, elapsed,
           (unsigned long long)ops_timed, (unsigned long long)ops_warmup,
           (unsigned long long)connects, cpu_timed, (unsigned long long)total_errors);
    for (int k = 0; k < E_KINDS; k++) {
        printf("%s\"%s\": %llu", k ? ", " : "", kind_names[k], (unsigned long long)errors[k]);
    }
    printf("}, \"first_error\": \"");
    for (const char *c = first_error; *c; c++) {
        if (*c == '"' || *c == '\\') putchar('\\');
        putchar(*c);
    }
    printf("\"}\n");
    return 0;
}

/* -- the reference echo server --------------------------------------------------------------- */

static volatile sig_atomic_t stop_serving;
static void on_signal(int sig) { (void)sig; stop_serving = 1; }

static int run_server(void) {
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0) die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&cfg.addr, sizeof cfg.addr) < 0) die("bind");
    if (listen(lfd, 1024) < 0) die("listen");
    struct sockaddr_in bound;
    socklen_t blen = sizeof bound;
    getsockname(lfd, (struct sockaddr *)&bound, &blen);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &bound.sin_addr, ip, sizeof ip);
    printf("loadgen-echo listening on %s:%d\n", ip, ntohs(bound.sin_port));
    fflush(stdout);
    static char buf[MAX_SIZE];
    struct epoll_event events[256];
    while (!stop_serving) {
        int n = epoll_wait(epfd, events, 256, 200);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                for (;;) {
                    int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) break;
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            /* Echo what is there. A small echo always fits the socket buffer; if a send is
               short the connection is dropped (this server is only for the ceiling). */
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r > 0 && send(fd, buf, (size_t)r, MSG_NOSIGNAL) == r) continue;
            if (r < 0 && errno == EAGAIN) continue;
            epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
            close(fd);
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || (strcmp(argv[1], "client") != 0 && strcmp(argv[1], "serve") != 0)) {
        fprintf(stderr, "usage: loadgen client|serve --port P [options] (see loadgen.c)\n");
        return 2;
    }
    int serve = strcmp(argv[1], "serve") == 0;
    const char *host = "127.0.0.1";
    int port = -1;
    cfg.keepalive = -1;
    cfg.conns = 64;
    cfg.size = 64;
    cfg.seconds = 5;
    cfg.warmup = 0.5;
    cfg.timeout_ns = 2000000000LL;
    for (int i = 2; i < argc; i += 2) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "loadgen: %s needs a value\n", k);
            return 2;
        }
        if (!strcmp(k, "--host")) host = v;
        else if (!strcmp(k, "--port")) port = (int)arg_num(v, k);
        else if (!strcmp(k, "--mode")) {
            if (!strcmp(v, "keepalive")) cfg.keepalive = 1;
            else if (!strcmp(v, "connect")) cfg.keepalive = 0;
            else {
                fprintf(stderr, "loadgen: --mode keepalive|connect\n");
                return 2;
            }
        } else if (!strcmp(k, "--conns")) cfg.conns = (int)arg_num(v, k);
        else if (!strcmp(k, "--size")) cfg.size = (size_t)arg_num(v, k);
        else if (!strcmp(k, "--seconds")) cfg.seconds = arg_num(v, k);
        else if (!strcmp(k, "--warmup")) cfg.warmup = arg_num(v, k);
        else if (!strcmp(k, "--timeout-ms")) cfg.timeout_ns = (int64_t)(arg_num(v, k) * 1e6);
        else {
            fprintf(stderr, "loadgen: unknown option %s\n", k);
            return 2;
        }
    }
    if (port < 0 || port > 65535) {
        fprintf(stderr, "loadgen: --port is required (0..65535)\n");
        return 2;
    }
    cfg.addr.sin_family = AF_INET;
    cfg.addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &cfg.addr.sin_addr) != 1) {
        fprintf(stderr, "loadgen: --host must be an IPv4 address\n");
        return 2;
    }
    if (serve) return run_server();
    if (cfg.keepalive < 0 || cfg.conns < 1 || cfg.conns > MAX_CONNS || cfg.size < 1 ||
        cfg.size > MAX_SIZE || cfg.seconds <= 0 || cfg.warmup < 0 || cfg.timeout_ns <= 0) {
        fprintf(stderr, "loadgen: need --mode, 1 <= --conns <= %d, 1 <= --size <= %d, "
                        "--seconds > 0, --warmup >= 0, --timeout-ms > 0\n",
                MAX_CONNS, MAX_SIZE);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    alarm((unsigned)(cfg.warmup + cfg.seconds + 30)); /* a hard bound, whatever happens */
    return run_client();
}
