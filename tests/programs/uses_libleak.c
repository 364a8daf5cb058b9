/* Calls lib_leak() in libleak.so: the leak lives in a shared library.
 * Link: -L<dir> -lleak -Wl,-rpath,<dir>. */
#include "leaky.h"

#define BLOCKS 40

size_t lib_leak(int blocks);

int main(void)
{
    wait_for_go();
    size_t bytes = lib_leak(BLOCKS);
    report_site("lib_leak", bytes, BLOCKS);
    report_leaked(bytes, BLOCKS);
    linger();
    return 0;
}
