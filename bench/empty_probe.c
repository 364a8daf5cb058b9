/* empty_probe.c: the floor under any uprobe-based tracer. Entry and return
 * handlers that do nothing: what remains is the cost of the traps alone.
 * bcc dialect, compiled at run time by bench/malloc_bench.py. */
#include <uapi/linux/ptrace.h>

int on_enter(struct pt_regs *ctx) { return 0; }
int on_return(struct pt_regs *ctx) { return 0; }
