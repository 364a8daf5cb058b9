/* Leaks the CFI unwinder must see through; built with -O2 -fomit-frame-pointer.
 *   unwind_cases chain      main -> chain_1 .. chain_5 -> malloc
 *   unwind_cases recursive  main -> recurse x RECURSION -> malloc
 *   unwind_cases deep       main -> recurse x (DEEP + 1) -> malloc: 66 frames up to main
 *   unwind_cases deeper     main -> recurse x (DEEPER + 1) -> malloc: past any walk's limit
 *   unwind_cases signal     main -> fire_signals -> raise -> (signal) on_signal -> malloc
 * noipa keeps each function a real frame: no inlining, cloning or tail calls
 * folded away; the work after each call keeps the calls from being tail calls. */
#include <signal.h>
#include <string.h>
#include "leaky.h"

#define LEAKS 32
#define BLOCK 200
#define RECURSION 6
#define DEEP 64
#define DEEPER 200

#define FRAME __attribute__((noipa))

void *volatile kept[3 * LEAKS]; /* volatile: gcc may not drop the mallocs */
static int nkept;
static volatile int sink;

FRAME static int chain_5(int i)
{
    kept[nkept++] = malloc(BLOCK);
    return i + 5;
}
FRAME static int chain_4(int i) { int r = chain_5(i); sink += r; return r + 4; }
FRAME static int chain_3(int i) { int r = chain_4(i); sink += r; return r + 3; }
FRAME static int chain_2(int i) { int r = chain_3(i); sink += r; return r + 2; }
FRAME static int chain_1(int i) { int r = chain_2(i); sink += r; return r + 1; }

FRAME static int recurse(int depth)
{
    if (depth == 0) {
        kept[nkept++] = malloc(BLOCK);
        return 1;
    }
    int r = recurse(depth - 1);
    sink += r;
    return r + 1;
}

static void on_signal(int signo)
{
    kept[nkept++] = malloc(BLOCK);
    sink += signo;
}

FRAME static void fire_signals(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_signal;
    sigaction(SIGUSR1, &action, NULL);
    for (int i = 0; i < LEAKS; i++) {
        raise(SIGUSR1); /* delivered before raise returns: deterministic */
        sink += i;
    }
}

int main(int argc, char **argv)
{
    const char *which = argc > 1 ? argv[1] : "chain";
    const char *site = "chain_5";
    wait_for_go();
    for (int i = 0; i < LEAKS; i++) {
        if (!strcmp(which, "chain"))
            sink += chain_1(i);
        else if (!strcmp(which, "recursive"))
            sink += recurse(RECURSION), site = "recurse";
        else if (!strcmp(which, "deep"))
            sink += recurse(DEEP), site = "recurse";
        else if (!strcmp(which, "deeper"))
            sink += recurse(DEEPER), site = "recurse";
    }
    if (!strcmp(which, "signal"))
        fire_signals(), site = "on_signal";
    report_site(site, (size_t)LEAKS * BLOCK, LEAKS);
    report_leaked((size_t)LEAKS * BLOCK, LEAKS);
    linger();
    return 0;
}
