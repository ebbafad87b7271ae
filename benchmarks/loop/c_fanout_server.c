/*
 * c_fanout_server: the plain-C reference for the broadcast fan-out benchmark.
 *
 * It does the same job as the Python servers (benchmarks/loop/servers.py):
 * accept N connections on 127.0.0.1, then broadcast F frames to all of them.
 * The frames are read from a file (F frames of exactly 105 bytes, built with
 * pushcore's encoder by the driver), so every implementation sends the same
 * bytes.
 *
 *   -k 1    one send() per delivery: each "turn" releases one more frame and
 *           every connection gets it in its own send() -- what a server does
 *           when frames arrive one at a time.
 *   -k 16   16 frames per send(): each turn releases 16 frames and every
 *           connection gets them in one send() -- perfect coalescing.
 *
 * Non-blocking sockets: a connection whose send buffer is full is parked
 * until epoll reports it writable, and then catches up (still at most k
 * frames per send()), while the others keep going.  Between turns the server
 * polls epoll once without waiting, like an event loop turn.
 *
 * Prints "listening PORT" when ready, then one JSON line with its own view
 * (time from the first send to the last byte handed to the kernel, sends).
 * Compiled at run time by benchmarks/loop/cbuild.py; never committed as a
 * binary.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FRAME_SIZE 105
#define MAX_EVENTS 1024

typedef struct {
    int fd;
    int blocked;          /* send buffer full: wait for EPOLLOUT */
    size_t sent;          /* bytes of the frame stream handed to the kernel */
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

static unsigned char *stream;     /* F frames back to back */
static size_t stream_len;
static long nsends;

/* Send what connection c may have: frames up to `released`, at most k frames
 * per send(), each send ending on a frame boundary. */
static void pump(conn_t *c, size_t released, size_t chunk) {
    while (!c->blocked && c->sent < released) {
        size_t upto = (c->sent / FRAME_SIZE) * FRAME_SIZE + chunk;
        if (upto > released) upto = released;
        size_t want = upto - c->sent;
        ssize_t w = send(c->fd, stream + c->sent, want, MSG_NOSIGNAL | MSG_DONTWAIT);
        nsends++;
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                c->blocked = 1;
                return;
            }
            if (errno == EINTR) continue;
            die("send");
        }
        c->sent += (size_t)w;
        if ((size_t)w < want) {
            c->blocked = 1;      /* partial: the buffer is full */
            return;
        }
    }
}

int main(int argc, char **argv) {
    int nconns = 0, k = 1;
    const char *frames_path = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "n:k:F:")) != -1) {
        switch (opt) {
        case 'n': nconns = atoi(optarg); break;
        case 'k': k = atoi(optarg); break;
        case 'F': frames_path = optarg; break;
        default:
            fprintf(stderr, "usage: c_fanout_server -n CONNS -k FRAMES_PER_SEND -F FRAMES_FILE\n");
            return 2;
        }
    }
    if (nconns <= 0 || k <= 0 || !frames_path) {
        fprintf(stderr, "usage: c_fanout_server -n CONNS -k FRAMES_PER_SEND -F FRAMES_FILE\n");
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    FILE *f = fopen(frames_path, "rb");
    if (!f) die(frames_path);
    struct stat st;
    fstat(fileno(f), &st);
    stream_len = (size_t)st.st_size;
    if (stream_len == 0 || stream_len % FRAME_SIZE) {
        fprintf(stderr, "%s: size %zu is not a multiple of %d\n", frames_path, stream_len, FRAME_SIZE);
        return 2;
    }
    stream = malloc(stream_len);
    if (!stream || fread(stream, 1, stream_len, f) != stream_len) die("read frames");
    fclose(f);
    size_t nframes = stream_len / FRAME_SIZE;

    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0) die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(lfd, 4096) < 0) die("listen");
    socklen_t al = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &al);
    printf("listening %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    conn_t *conns = calloc(nconns, sizeof *conns);
    int ep = epoll_create1(0);
    for (int i = 0; i < nconns; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) die("accept");
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conns[i].fd = fd;
        /* edge-triggered: one event each time the buffer gains room */
        struct epoll_event ev = {.events = EPOLLOUT | EPOLLET, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    }

    struct epoll_event events[MAX_EVENTS];
    size_t chunk = (size_t)k * FRAME_SIZE;
    size_t released_frames = 0;
    int finished = 0;
    double t0 = now();
    while (finished < nconns) {
        int wait_ms = 0;
        if (released_frames < nframes) {
            /* a turn: release k more frames and push them to everyone */
            released_frames += (size_t)k;
            if (released_frames > nframes) released_frames = nframes;
            size_t released = released_frames * FRAME_SIZE;
            for (int i = 0; i < nconns; i++) pump(&conns[i], released, chunk);
        } else {
            wait_ms = 1000;
        }
        int n = epoll_wait(ep, events, MAX_EVENTS, wait_ms);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        size_t released = released_frames * FRAME_SIZE;
        for (int e = 0; e < n; e++) {
            conn_t *c = &conns[events[e].data.u32];
            c->blocked = 0;
            pump(c, released, chunk);
        }
        finished = 0;
        if (released_frames == nframes)
            for (int i = 0; i < nconns; i++) finished += conns[i].sent == stream_len;
    }
    double t1 = now();
    printf("{\"impl\":\"c\",\"k\":%d,\"server_seconds\":%.6f,\"sends\":%ld,\"deliveries\":%zu}\n",
           k, t1 - t0, nsends, nframes * (size_t)nconns);
    fflush(stdout);
    /* keep the sockets open until the client has read everything */
    char tmp[16];
    while (read(0, tmp, sizeof tmp) > 0) {}
    for (int i = 0; i < nconns; i++) close(conns[i].fd);
    return 0;
}
