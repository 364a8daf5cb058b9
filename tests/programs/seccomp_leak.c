/* A leaking program under a seccomp filter that kills the process on the
 * uretprobe syscall (335), as a strict service sandbox would. On a kernel that
 * filters that syscall (6.11 until the Feb 2025 fix) the first uretprobe
 * return kills it; fixed kernels skip the filter for it. The filter goes on
 * before "go", so the tracer attaches to a process that already has it.
 * Usage: seccomp_leak [CALLS]   (default 20 leaked blocks of 4096 bytes). */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include "leaky.h"

#define BLOCK 4096

static void install_filter(void)
{
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 335, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = { .len = sizeof(code) / sizeof(code[0]), .filter = code };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program)) {
        perror("seccomp");
        exit(2);
    }
}

__attribute__((noinline)) static void *keep_block(void)
{
    return malloc(BLOCK);
}

int main(int argc, char **argv)
{
    int calls = argc > 1 ? atoi(argv[1]) : 20;
    install_filter();
    printf("FILTERED\n");
    fflush(stdout);
    wait_for_go();
    for (int i = 0; i < calls; i++)
        keep_block();
    report_site("keep_block", (size_t)calls * BLOCK, calls);
    report_leaked((size_t)calls * BLOCK, calls);
    linger();
    return 0;
}
