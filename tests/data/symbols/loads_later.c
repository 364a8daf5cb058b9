/* Runs to its end under the loader stop: prints what it was given, and with an
 * argument dlopens that library after start-up (the loader runs again then,
 * after the detach, as it would untraced). */
#include <dlfcn.h>
#include <stdio.h>

int exported_counter = 7;

int main(int argc, char **argv)
{
    if (argc > 1 && dlopen(argv[1], RTLD_NOW) == NULL) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 3;
    }
    printf("ran %d\n", exported_counter);
    return 0;
}
