/*
 * count_client: the load side of the connection-loop benchmarks.
 *
 * Written in C with one epoll loop so that it is never the bottleneck: every
 * server under test (pushcore, asyncio, uvloop, the C reference) is measured
 * against the same client in the same way.  Compiled at run time by
 * benchmarks/loop/cbuild.py (gcc -O2); never committed as a binary.
 *
 * Modes (all connect N sockets to 127.0.0.1:PORT):
 *
 *   fanout  count the bytes each connection receives.  Frames are a fixed
 *           FRAME_SIZE bytes, so deliveries = bytes / FRAME_SIZE.  The run
 *           ends when every connection has received exactly F frames; any
 *           other total is a failure.  The rate is measured from the first
 *           byte received to the last.
 *   ping    keep exactly one PING (30 00) outstanding per connection and
 *           count PONGs (40 00) for a fixed duration after a warm-up.
 *   idle    open the connections, then hold them open until stdin closes
 *           (the driver measures the server's memory meanwhile).
 *
 * With -H HEX every connection first sends that HELLO frame and waits for
 * one whole frame back (WELCOME) before the measured phase; those bytes are
 * not counted.  Five '#' bytes in the HELLO (in its device id) are replaced
 * by the connection's index, zero-padded ("00042"), so each connection is
 * its own device (the frame keeps its length).  "handshaken N" is printed to stdout when all are through.
 *
 * The result is one JSON object on stdout's last line (fanout: with the
 * CLOCK_MONOTONIC times of the first and last byte, for drivers that time
 * from their own start).  Exit status: 0 ok,
 * 1 wrong byte count or protocol surprise, 2 usage, 3 timeout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FRAME_SIZE 105
#define READ_SIZE (256 * 1024)
#define MAX_EVENTS 1024
/* Connections whose handshake is still in flight: keeps the server's accept
 * queue from overflowing (an overflow costs a one-second SYN retry). */
#define MAX_CONNECTING 256

enum { ST_CONNECTING, ST_HANDSHAKE, ST_RUNNING, ST_DONE };

typedef struct {
    int fd;
    int state;
    uint64_t received;          /* measured-phase bytes */
    /* the WELCOME being read during the handshake */
    unsigned char hs[64];
    int hs_len;
    int hs_need;                /* total frame size once known, else 0 */
    int pong_partial;           /* 1 when half a PONG has arrived */
} conn_t;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int parse_hex(const char *s, unsigned char *out, int cap) {
    int n = 0;
    size_t len = strlen(s);
    if (len % 2) return -1;
    for (size_t i = 0; i < len; i += 2) {
        int hi = hexval(s[i]), lo = hexval(s[i + 1]);
        if (hi < 0 || lo < 0 || n >= cap) return -1;
        out[n++] = (unsigned char)(hi * 16 + lo);
    }
    return n;
}

/* Size of the frame in buf[0:len] once its header and length are complete,
 * else 0 (need more bytes), or -1 on a malformed length. */
static int frame_size(const unsigned char *buf, int len) {
    uint32_t body = 0;
    for (int i = 1; i < len && i <= 5; i++) {
        body |= (uint32_t)(buf[i] & 0x7f) << (7 * (i - 1));
        if (!(buf[i] & 0x80)) {
            uint64_t total = (uint64_t)1 + i + body;
            return total > 60 ? -1 : (int)total;   /* a WELCOME is tiny */
        }
    }
    return len > 5 ? -1 : 0;
}

static void usage(void) {
    fprintf(stderr,
            "usage: count_client MODE -p PORT -n CONNS [-f FRAMES] [-d SECONDS]\n"
            "                    [-w WARMUP] [-H HELLO_HEX] [-t TIMEOUT]\n"
            "  MODE: fanout | ping | idle\n");
    exit(2);
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    const char *mode = argv[1];
    int is_fanout = !strcmp(mode, "fanout");
    int is_ping = !strcmp(mode, "ping");
    int is_idle = !strcmp(mode, "idle");
    if (!is_fanout && !is_ping && !is_idle) usage();

    int port = 0, nconns = 0;
    long frames = 0;
    double duration = 3.0, warmup = 0.5, timeout = 60.0;
    unsigned char hello[512];
    int hello_len = 0;
    int opt;
    optind = 2;
    while ((opt = getopt(argc, argv, "p:n:f:d:w:H:t:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'n': nconns = atoi(optarg); break;
        case 'f': frames = atol(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 't': timeout = atof(optarg); break;
        case 'H':
            hello_len = parse_hex(optarg, hello, sizeof hello);
            if (hello_len <= 0) usage();
            break;
        default: usage();
        }
    }
    if (port <= 0 || nconns <= 0 || (is_fanout && frames <= 0)) usage();
    int mark = -1;   /* offset of "#####" in the HELLO: the per-connection index goes there */
    for (int i = 0; i + 5 <= hello_len; i++)
        if (!memcmp(hello + i, "#####", 5)) { mark = i; break; }
    if (mark >= 0 && nconns > 99999) usage();
    raise_nofile();

    conn_t *conns = calloc(nconns, sizeof *conns);
    unsigned char *rbuf = malloc(READ_SIZE);
    if (!conns || !rbuf) die("malloc");
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");

    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    const uint64_t expect_per_conn = (uint64_t)frames * FRAME_SIZE;
    const uint64_t expect_total = expect_per_conn * (uint64_t)nconns;
    uint64_t total = 0;         /* measured-phase bytes, all connections */
    uint64_t pongs = 0, pongs_at_start = 0;
    double first_byte = 0, last_byte = 0;
    double t_start = now(), deadline = t_start + timeout;
    double measure_start = 0, measure_end = 0;
    int opened = 0, connecting = 0, handshaken = 0, done = 0;
    int announced = 0, measuring = 0;
    int status = 0;
    const unsigned char ping[2] = {0x30, 0x00};
    struct epoll_event events[MAX_EVENTS];

    for (;;) {
        /* open connections, a bounded number in handshake at a time */
        while (opened < nconns && (hello_len == 0 || connecting < MAX_CONNECTING)) {
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (fd < 0) die("socket");
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS)
                die("connect");
            conn_t *c = &conns[opened];
            c->fd = fd;
            c->state = ST_CONNECTING;
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP,
                                     .data.u32 = (uint32_t)opened};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
            opened++;
            connecting++;
            /* without a handshake, pace the connects a little anyway */
            if (hello_len == 0 && opened % 128 == 0) break;
        }

        if (!announced && handshaken == nconns) {
            announced = 1;
            printf("handshaken %d\n", nconns);
            fflush(stdout);
            if (is_ping) {
                /* start every connection's first PING */
                for (int i = 0; i < nconns; i++)
                    if (send(conns[i].fd, ping, 2, MSG_NOSIGNAL) != 2) die("send ping");
                measure_start = now() + warmup;
                measure_end = measure_start + duration;
            }
        }

        double t = now();
        if (is_ping && announced) {
            if (!measuring && t >= measure_start) {
                measuring = 1;
                pongs_at_start = pongs;
                measure_start = t;
                printf("measuring\n");    /* the driver samples the server's CPU time here */
                fflush(stdout);
            }
            if (measuring && t >= measure_end) {
                measure_end = t;
                break;
            }
        }
        if (is_fanout && total >= expect_total && done == nconns) break;
        if (t > deadline) {
            status = 3;
            break;
        }

        int wait_ms = 50;
        if (opened < nconns) wait_ms = 1;
        if (is_idle && announced) {
            /* hold until stdin closes; stdin is polled below */
            struct pollfd p = {.fd = 0, .events = POLLIN};
            if (poll(&p, 1, 0) > 0) {
                char tmp[64];
                if (read(0, tmp, sizeof tmp) <= 0) break;
            }
        }
        int n = epoll_wait(ep, events, MAX_EVENTS, wait_ms);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int e = 0; e < n; e++) {
            conn_t *c = &conns[events[e].data.u32];
            uint32_t evs = events[e].events;
            if (c->state == ST_CONNECTING) {
                if (!(evs & EPOLLOUT) && !(evs & (EPOLLERR | EPOLLHUP))) continue;
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err) {
                    fprintf(stderr, "connect: %s\n", strerror(err));
                    exit(1);
                }
                struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP,
                                         .data.u32 = events[e].data.u32};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                if (hello_len) {
                    if (mark >= 0) {
                        char digits[8];
                        snprintf(digits, sizeof digits, "%05u", (unsigned)events[e].data.u32);
                        memcpy(hello + mark, digits, 5);
                    }
                    if (send(c->fd, hello, hello_len, MSG_NOSIGNAL) != hello_len) die("send hello");
                    c->state = ST_HANDSHAKE;
                } else {
                    c->state = ST_RUNNING;
                    connecting--;
                    handshaken++;
                }
                continue;
            }
            /* drain everything readable */
            for (;;) {
                ssize_t r = recv(c->fd, rbuf, READ_SIZE, 0);
                if (r < 0) {
                    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                    if (errno == EINTR) continue;
                    fprintf(stderr, "recv on conn %ld: %s\n", (long)(c - conns), strerror(errno));
                    status = 1;
                    goto finish;
                }
                if (r == 0) {
                    if (is_fanout && c->received == expect_per_conn) break;
                    fprintf(stderr, "conn %ld closed by server after %llu bytes\n",
                            (long)(c - conns), (unsigned long long)c->received);
                    status = 1;
                    goto finish;
                }
                ssize_t off = 0;
                if (c->state == ST_HANDSHAKE) {
                    while (off < r && (c->hs_need == 0 || c->hs_len < c->hs_need)) {
                        c->hs[c->hs_len++] = rbuf[off++];
                        if (c->hs_need == 0) {
                            c->hs_need = frame_size(c->hs, c->hs_len);
                            if (c->hs_need < 0) {
                                fprintf(stderr, "bad handshake reply (header 0x%02x)\n", c->hs[0]);
                                status = 1;
                                goto finish;
                            }
                        }
                    }
                    if (c->hs_need > 0 && c->hs_len == c->hs_need) {
                        if ((c->hs[0] >> 4) != 2) {   /* WELCOME */
                            fprintf(stderr, "handshake reply is frame type %d, not WELCOME\n",
                                    c->hs[0] >> 4);
                            status = 1;
                            goto finish;
                        }
                        c->state = ST_RUNNING;
                        connecting--;
                        handshaken++;
                    }
                    if (off == r) continue;
                }
                ssize_t got = r - off;
                if (is_fanout) {
                    double tb = now();
                    if (first_byte == 0) first_byte = tb;
                    last_byte = tb;
                    c->received += got;
                    total += got;
                    if (c->received > expect_per_conn) {
                        fprintf(stderr, "conn %ld got %llu bytes, more than %llu\n",
                                (long)(c - conns), (unsigned long long)c->received,
                                (unsigned long long)expect_per_conn);
                        status = 1;
                        goto finish;
                    }
                    if (c->received == expect_per_conn && c->state != ST_DONE) {
                        c->state = ST_DONE;
                        done++;
                    }
                } else if (is_ping) {
                    /* a PONG is 40 00; one is outstanding, so at most one
                     * arrives, perhaps split in two reads */
                    int halves = c->pong_partial + (int)got;
                    for (ssize_t i = off; i < r; i++) {
                        int want = ((i - off + c->pong_partial) % 2) ? 0x00 : 0x40;
                        if (rbuf[i] != want) {
                            fprintf(stderr, "unexpected byte 0x%02x in PONG stream\n", rbuf[i]);
                            status = 1;
                            goto finish;
                        }
                    }
                    int whole = halves / 2;
                    c->pong_partial = halves % 2;
                    if (whole > 1) {
                        fprintf(stderr, "%d PONGs for one PING\n", whole);
                        status = 1;
                        goto finish;
                    }
                    if (whole == 1) {
                        pongs++;
                        if (send(c->fd, ping, 2, MSG_NOSIGNAL) != 2) {
                            fprintf(stderr, "send ping: %s\n", strerror(errno));
                            status = 1;
                            goto finish;
                        }
                    }
                } else {
                    /* idle: nothing is expected after WELCOME */
                    fprintf(stderr, "idle conn got %zd unexpected bytes\n", got);
                    status = 1;
                    goto finish;
                }
                if (r < READ_SIZE) break;   /* drained: skip the EAGAIN call */
            }
        }
    }

finish:;
    double t_end = now();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    /* the client's own CPU time: evidence that it is not the bottleneck */
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
                 ru.ru_stime.tv_usec / 1e6;
    if (is_fanout) {
        uint64_t deliveries = total / FRAME_SIZE;
        double secs = last_byte > first_byte ? last_byte - first_byte : 0;
        int exact = total == expect_total && done == nconns;
        if (!exact && status == 0) status = 1;
        printf("{\"mode\":\"fanout\",\"conns\":%d,\"frames\":%ld,\"bytes\":%llu,"
               "\"expected_bytes\":%llu,\"exact\":%s,\"deliveries\":%llu,"
               "\"seconds\":%.6f,\"rate\":%.1f,\"cpu_seconds\":%.3f,\"wall_seconds\":%.3f,"
               "\"first_byte\":%.6f,\"last_byte\":%.6f,\"status\":%d}\n",
               nconns, frames, (unsigned long long)total, (unsigned long long)expect_total,
               exact ? "true" : "false", (unsigned long long)deliveries, secs,
               secs > 0 ? deliveries / secs : 0.0, cpu, t_end - t_start, first_byte, last_byte, status);
    } else if (is_ping) {
        uint64_t counted = pongs - pongs_at_start;
        double secs = measuring ? measure_end - measure_start : 0;
        printf("{\"mode\":\"ping\",\"conns\":%d,\"round_trips\":%llu,\"seconds\":%.6f,"
               "\"rate\":%.1f,\"cpu_seconds\":%.3f,\"wall_seconds\":%.3f,\"status\":%d}\n",
               nconns, (unsigned long long)counted, secs,
               secs > 0 ? counted / secs : 0.0, cpu, t_end - t_start, status);
    } else {
        printf("{\"mode\":\"idle\",\"conns\":%d,\"handshaken\":%d,\"seconds\":%.3f,\"status\":%d}\n",
               nconns, handshaken, t_end - t_start, status);
    }
    fflush(stdout);
    for (int i = 0; i < opened; i++) close(conns[i].fd);
    return status;
}
