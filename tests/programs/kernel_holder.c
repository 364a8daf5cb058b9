/* kernel_holder MODE N [DIR]: makes the kernel hold memory for a known reason,
 * then gives it back, on cue.
 *
 * Protocol (stdin/stdout, one line each): "go" -> allocate, print
 * "HELD count=N"; "release" -> give it back, print "RELEASED"; EOF -> exit.
 * Modes: pipes (N pipes held open), eventfd (N eventfds in one epoll),
 * pipedata (N pipes with one byte written into each: the pipe's first
 * pipe_buffer then points at anon_pipe_buf_ops), sockets (N connected pairs
 * of unix stream sockets),
 * inotify (N watches on the files DIR/f0..f<N-1>, which must exist),
 * negdentry (stat() of N missing paths DIR/m<i>: negative dentries, released
 * by whoever removes DIR). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static int *fds;
static int extra_fd = -1;

static void hold(const char *mode, int n, const char *dir)
{
	char path[4096];
	struct stat st;
	if (!strcmp(mode, "eventfd") || !strcmp(mode, "inotify"))
		extra_fd = !strcmp(mode, "eventfd") ? epoll_create1(0) : inotify_init1(0);
	for (int i = 0; i < n; i++) {
		if (!strcmp(mode, "pipes") || !strcmp(mode, "pipedata")) {
			if (pipe(&fds[2 * i])) { perror("pipe"); exit(1); }
			if (!strcmp(mode, "pipedata") && write(fds[2 * i + 1], "x", 1) != 1) { perror("write"); exit(1); }
		} else if (!strcmp(mode, "sockets")) {
			if (socketpair(AF_UNIX, SOCK_STREAM, 0, &fds[2 * i])) { perror("socketpair"); exit(1); }
		} else if (!strcmp(mode, "eventfd")) {
			struct epoll_event event = { .events = EPOLLIN, .data.fd = i };
			fds[i] = eventfd(0, 0);
			if (fds[i] < 0 || epoll_ctl(extra_fd, EPOLL_CTL_ADD, fds[i], &event)) { perror("eventfd"); exit(1); }
		} else if (!strcmp(mode, "inotify")) {
			snprintf(path, sizeof(path), "%s/f%d", dir, i);
			if (inotify_add_watch(extra_fd, path, IN_MODIFY) < 0) { perror(path); exit(1); }
		} else {
			snprintf(path, sizeof(path), "%s/m%d", dir, i);
			if (stat(path, &st) == 0) { fprintf(stderr, "%s exists\n", path); exit(1); }
		}
	}
}

static void release(const char *mode, int n)
{
	int per = !strcmp(mode, "pipes") || !strcmp(mode, "pipedata") || !strcmp(mode, "sockets") ? 2 : !strcmp(mode, "eventfd") ? 1 : 0;
	for (int i = 0; i < n * per; i++)
		close(fds[i]);
	if (extra_fd >= 0)
		close(extra_fd);
}

int main(int argc, char **argv)
{
	char line[64];
	if (argc < 3) {
		fprintf(stderr, "usage: %s pipes|pipedata|sockets|eventfd|inotify|negdentry N [DIR]\n", argv[0]);
		return 2;
	}
	int n = atoi(argv[2]);
	fds = calloc(2 * (size_t)n, sizeof(int));
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof(line), stdin)) {
		if (!strncmp(line, "go", 2)) {
			hold(argv[1], n, argc > 3 ? argv[3] : ".");
			printf("HELD count=%d\n", n);
		} else if (!strncmp(line, "release", 7)) {
			release(argv[1], n);
			printf("RELEASED\n");
		}
	}
	return 0;
}
