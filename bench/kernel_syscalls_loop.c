/* kernel_syscalls_loop MODE SECONDS: a syscall-heavy loop for bench/kernel_syscalls.py.
 * Each op makes the kernel allocate and free at once, so every op costs a few
 * kmem tracepoint events:
 *   pipe        pipe2() + close both ends (pipe_inode_info, buffers, files, inode, dentry)
 *   open        open("/dev/null") + close (file, and the lookup's name buffer)
 *   socketpair  socketpair(AF_UNIX) + close both (sockets, inodes, files)
 * Prints "ops=N seconds=S ops_per_s=R". */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void one_op(const char *mode)
{
	int fds[2];
	if (!strcmp(mode, "pipe")) {
		if (pipe(fds)) { perror("pipe"); exit(1); }
	} else if (!strcmp(mode, "socketpair")) {
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds)) { perror("socketpair"); exit(1); }
	} else {
		fds[0] = open("/dev/null", O_RDONLY);
		if (fds[0] < 0) { perror("open"); exit(1); }
		close(fds[0]);
		return;
	}
	close(fds[0]);
	close(fds[1]);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s pipe|open|socketpair SECONDS\n", argv[0]);
		return 2;
	}
	double seconds = atof(argv[2]), start = now(), elapsed;
	long ops = 0;
	do {
		for (int i = 0; i < 256; i++)
			one_op(argv[1]);
		ops += 256;
		elapsed = now() - start;
	} while (elapsed < seconds);
	printf("ops=%ld seconds=%.3f ops_per_s=%.0f\n", ops, elapsed, ops / elapsed);
	return 0;
}
