/* Runs to its end under the loader stop: prints what it was given, and with an
 * argument dlopens that library after start-up (the loader's debug hook is
 * called again then, so no breakpoint may be left behind). */
#include <dlfcn.h>
#include <stdio.h>

int exported_counter = 7; /* in .dynsym with -rdynamic: a variable, not a function */

int main(int argc, char **argv)
{
    if (argc > 1 && dlopen(argv[1], RTLD_NOW) == NULL) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 3;
    }
    printf("ran %d\n", exported_counter);
    return 0;
}
