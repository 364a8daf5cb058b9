/* Starts threads that sleep forever: each kernel stack is a vmalloc area
 * (CONFIG_VMAP_STACK), so vmalloc grows with the thread count. */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static void *sleeper(void *arg) {
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

int main(int argc, char **argv) {
    long per_tick = atol(argc > 1 ? argv[1] : "20"); /* threads per 10 ms */
    long max = atol(argc > 2 ? argv[2] : "20000");
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (long n = 1; n <= max; n++) {
        pthread_t thread;
        if (pthread_create(&thread, &attr, sleeper, NULL) != 0)
            break;
        if (n % per_tick == 0)
            usleep(10000);
    }
    for (;;)
        pause();
}
