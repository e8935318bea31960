/*
 * pvnotify - a tiny sd_notify sender for busybox containers.
 *
 * Usage: pvnotify READY=1 [STATUS=text ...]
 *
 * Joins its arguments with newlines and sends them as ONE datagram to the
 * AF_UNIX socket named by $NOTIFY_SOCKET (a path, or "@name" for the
 * abstract namespace), as systemd's sd_notify() does.  pvinit's supervisor
 * reads these datagrams to learn that a container is READY.
 *
 * Exit status: 0 sent, 1 failed (no NOTIFY_SOCKET, bad usage, too long,
 * send error), with one line on stderr saying why.  Written without
 * libsystemd so it links statically (about 700 KB with glibc, far less
 * with musl) and runs in any busybox rootfs:
 *
 *     gcc -static -Os -s -o pvnotify pvnotify.c
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* pvinit's receiver drops datagrams larger than this, so refuse them here. */
#define PVNOTIFY_MAX 4096

static int fail(const char *what)
{
    if (errno)
        fprintf(stderr, "pvnotify: %s: %s\n", what, strerror(errno));
    else
        fprintf(stderr, "pvnotify: %s\n", what);
    return 1;
}

int main(int argc, char **argv)
{
    char message[PVNOTIFY_MAX];
    size_t used = 0;
    struct sockaddr_un addr;
    socklen_t addr_len;
    const char *target;
    size_t target_len;
    int fd;
    int i;

    errno = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: pvnotify READY=1 [STATUS=text ...]\n");
        return 1;
    }
    for (i = 1; i < argc; i++) {
        size_t len = strlen(argv[i]);
        size_t need = len + (i > 1 ? 1 : 0);
        if (used + need > sizeof(message))
            return fail("message longer than 4096 bytes");
        if (i > 1)
            message[used++] = '\n';
        memcpy(message + used, argv[i], len);
        used += len;
    }

    target = getenv("NOTIFY_SOCKET");
    if (target == NULL || target[0] == '\0')
        return fail("NOTIFY_SOCKET is not set");
    target_len = strlen(target);
    if (target_len >= sizeof(addr.sun_path))
        return fail("NOTIFY_SOCKET path is too long");

    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, target, target_len);
    if (target[0] == '@') {
        /* abstract namespace: leading NUL, no trailing NUL counted */
        addr.sun_path[0] = '\0';
        addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + target_len);
    } else {
        addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + target_len + 1);
    }

    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fail("socket");
    if (sendto(fd, message, used, 0, (struct sockaddr *)&addr, addr_len) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return fail(target);
    }
    close(fd);
    return 0;
}
