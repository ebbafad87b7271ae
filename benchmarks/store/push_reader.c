/*
 * push_reader: the connected subscribers of the store benchmarks, at C speed.
 *
 * One process, one epoll loop, N sockets to 127.0.0.1:PORT.  Each device
 * sends its own HELLO (line i of HELLO_FILE: the frame in hex, written by
 * harness.py with pushcore.Hello and pushcore.mint_token) and waits for
 * WELCOME.  Then every read is parsed frame by frame (header byte, length
 * varint; a PUSH's seq varint; the rest skipped): PUSH frames are counted
 * and, unless -n, the highest seq of the read is acked with one ACK
 * (cumulative, as pushcore.Client does).  NOTIFY is answered with
 * FETCH(after = highest seq, max 1000).  Compiled at run time by harness.py
 * (gcc -O2); never committed as a binary.
 *
 * usage: push_reader [-n] PORT HELLO_FILE
 * commands on stdin, one answer line (JSON) each on stdout:
 *   connect FIRST COUNT   connect devices FIRST..FIRST+COUNT-1 (at most 256
 *                         handshakes in flight); answer once all are welcomed
 *                         or closed: {"online":N,"closed":C,"seconds":S}
 *   wait PUSHES WITHIN    until PUSHES frames arrived in all, or WITHIN
 *                         seconds: {"pushes":N,"last":T,"closed":C}, T the
 *                         CLOCK_MONOTONIC time of the last PUSH (seconds)
 *   quit
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_SIZE (256 * 1024)
#define MAX_EVENTS 1024
#define IN_FLIGHT 256

enum { P_HEADER, P_LENGTH, P_SEQ, P_SKIP };

typedef struct {
    int fd;
    int welcomed;
    int pstate;
    int type;
    uint64_t length, shift, remaining;
    uint64_t seq, seq_shift;
    uint64_t top, acked;
    unsigned char *hello;
    size_t hello_len;
} Conn;

static Conn *conns;          /* indexed by fd */
static int max_fd;
static unsigned char **hellos;
static size_t *hello_lens;
static long n_hellos;
static int epfd, do_ack = 1;
static long online, closed_n, handshaking, next_dev, last_dev;
static uint64_t pushes;
static double last_push;
static struct sockaddr_in addr;

static double now_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t put_uvarint(unsigned char *p, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) { p[n++] = (unsigned char)(v | 0x80); v >>= 7; }
    p[n++] = (unsigned char)v;
    return n;
}

static void send_frame(int fd, int type, const unsigned char *body, size_t len) {
    unsigned char buf[32];
    size_t n = 0;
    buf[n++] = (unsigned char)(type << 4);
    n += put_uvarint(buf + n, len);
    memcpy(buf + n, body, len);
    n += len;
    (void)!send(fd, buf, n, MSG_NOSIGNAL);   /* a few bytes on a socket that is read: never short */
}

static void drop(Conn *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->welcomed) online--; else handshaking--;
    closed_n++;
    c->fd = -1;
}

static void frame_done(Conn *c) {
    if (c->type == 5) {
        pushes++;
        if (c->seq > c->top) c->top = c->seq;
    } else if (c->type == 2 && !c->welcomed) {
        c->welcomed = 1;
        handshaking--;
        online++;
    } else if (c->type == 6) {
        unsigned char body[20];
        size_t n = put_uvarint(body, c->top);
        n += put_uvarint(body + n, 1000);
        send_frame(c->fd, 7, body, n);
    }
    c->pstate = P_HEADER;
}

static void parse(Conn *c, const unsigned char *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        switch (c->pstate) {
        case P_HEADER:
            c->type = p[i++] >> 4;
            c->length = 0; c->shift = 0;
            c->pstate = P_LENGTH;
            break;
        case P_LENGTH: {
            unsigned char b = p[i++];
            c->length |= (uint64_t)(b & 0x7f) << c->shift;
            c->shift += 7;
            if (!(b & 0x80)) {
                c->remaining = c->length;
                c->seq = 0; c->seq_shift = 0;
                if (c->remaining == 0) frame_done(c);
                else c->pstate = (c->type == 5) ? P_SEQ : P_SKIP;
            }
            break;
        }
        case P_SEQ: {
            unsigned char b = p[i++];
            c->remaining--;
            c->seq |= (uint64_t)(b & 0x7f) << c->seq_shift;
            c->seq_shift += 7;
            if (!(b & 0x80)) c->pstate = P_SKIP;
            if (c->remaining == 0) frame_done(c);
            break;
        }
        case P_SKIP: {
            size_t take = n - i;
            if (take > c->remaining) take = (size_t)c->remaining;
            i += take;
            c->remaining -= take;
            if (c->remaining == 0) frame_done(c);
            break;
        }
        }
    }
}

static void start_connects(void) {
    while (next_dev < last_dev && handshaking < IN_FLIGHT) {
        long i = next_dev++;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (fd < 0) { perror("socket"); exit(1); }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (fd > max_fd) { fprintf(stderr, "fd %d over the table\n", fd); exit(1); }
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
            perror("connect"); exit(1);
        }
        Conn *c = &conns[fd];
        memset(c, 0, sizeof *c);
        c->fd = fd;
        c->hello = hellos[i];
        c->hello_len = hello_lens[i];
        struct epoll_event ev = {.events = EPOLLOUT, .data.fd = fd};
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
        handshaking++;
    }
}

static int hexval(int ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    return -1;
}

static void load_hellos(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) { perror(path); exit(2); }
    size_t cap = 1024;
    hellos = malloc(cap * sizeof *hellos);
    hello_lens = malloc(cap * sizeof *hello_lens);
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        size_t len = strcspn(line, "\r\n");
        if (len == 0) continue;
        if ((size_t)n_hellos == cap) {
            cap *= 2;
            hellos = realloc(hellos, cap * sizeof *hellos);
            hello_lens = realloc(hello_lens, cap * sizeof *hello_lens);
        }
        unsigned char *b = malloc(len / 2);
        for (size_t k = 0; k < len / 2; k++) b[k] = (unsigned char)(hexval(line[2 * k]) << 4 | hexval(line[2 * k + 1]));
        hellos[n_hellos] = b;
        hello_lens[n_hellos] = len / 2;
        n_hellos++;
    }
    fclose(f);
}

int main(int argc, char **argv) {
    int argi = 1;
    if (argi < argc && strcmp(argv[argi], "-n") == 0) { do_ack = 0; argi++; }
    if (argc - argi != 2) { fprintf(stderr, "usage: push_reader [-n] PORT HELLO_FILE\n"); return 2; }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    max_fd = (int)rl.rlim_cur + 16;
    conns = calloc((size_t)max_fd + 1, sizeof *conns);
    load_hellos(argv[argi + 1]);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)atoi(argv[argi]));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = 0};
    epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev);
    static unsigned char buf[READ_SIZE];
    char cmd[256];
    size_t cmd_len = 0;
    int pending = 0;            /* 0 none, 1 connect, 2 wait */
    uint64_t want = 0;
    double started = 0, deadline = 0;
    struct epoll_event events[MAX_EVENTS];

    for (;;) {
        start_connects();
        int n = epoll_wait(epfd, events, MAX_EVENTS, pending ? 20 : 1000);
        for (int k = 0; k < n; k++) {
            int fd = events[k].data.fd;
            if (fd == 0) {
                ssize_t r = read(0, cmd + cmd_len, sizeof cmd - 1 - cmd_len);
                if (r <= 0) return 0;
                cmd_len += (size_t)r;
                cmd[cmd_len] = 0;
                char *nl = strchr(cmd, '\n');
                if (nl && !pending) {
                    *nl = 0;
                    long a = 0, b = 0;
                    double w = 0;
                    started = now_mono();
                    if (sscanf(cmd, "connect %ld %ld", &a, &b) == 2) {
                        if (a < 0 || a + b > n_hellos) { fprintf(stderr, "no such devices\n"); return 2; }
                        next_dev = a; last_dev = a + b; pending = 1;
                    } else if (sscanf(cmd, "wait %ld %lf", &a, &w) == 2) {
                        want = (uint64_t)a; deadline = started + w; pending = 2;
                    } else if (strncmp(cmd, "quit", 4) == 0) {
                        return 0;
                    } else {
                        fprintf(stderr, "unknown command: %s\n", cmd); return 2;
                    }
                    size_t used = (size_t)(nl + 1 - cmd);
                    memmove(cmd, nl + 1, cmd_len - used);
                    cmd_len -= used;
                }
                continue;
            }
            Conn *c = &conns[fd];
            if (c->fd != fd) continue;
            if (events[k].events & EPOLLOUT) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err) { fprintf(stderr, "connect: %s\n", strerror(err)); drop(c); continue; }
                (void)!send(fd, c->hello, c->hello_len, MSG_NOSIGNAL);
                struct epoll_event in = {.events = EPOLLIN, .data.fd = fd};
                epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &in);
                continue;
            }
            uint64_t before = pushes;
            for (;;) {
                ssize_t r = recv(fd, buf, READ_SIZE, 0);
                if (r > 0) {
                    parse(c, buf, (size_t)r);
                    if (r < READ_SIZE) break;
                    continue;
                }
                if (r == 0 || (errno != EAGAIN && errno != EINTR)) drop(c);
                break;
            }
            if (pushes != before) last_push = now_mono();
            if (c->fd == fd && do_ack && c->top > c->acked) {
                unsigned char body[10];
                send_frame(fd, 8, body, put_uvarint(body, c->top));
                c->acked = c->top;
            }
        }
        if (pending == 1 && next_dev >= last_dev && handshaking == 0) {
            printf("{\"online\": %ld, \"closed\": %ld, \"seconds\": %.6f}\n", online, closed_n, now_mono() - started);
            fflush(stdout);
            pending = 0;
        } else if (pending == 2 && (pushes >= want || now_mono() > deadline)) {
            printf("{\"pushes\": %llu, \"last\": %.6f, \"closed\": %ld}\n", (unsigned long long)pushes, last_push,
                   closed_n);
            fflush(stdout);
            pending = 0;
        }
    }
}
