/* thread_exits THREADS SIZES: start THREADS threads one after the other; each
 * mallocs and frees one block of each of SIZES sizes (so its tcache holds
 * SIZES blocks) and exits. At each exit glibc empties the thread's tcache
 * with free(): SIZES blocks freed a second time from the tracer's point of
 * view, plus the tcache itself, allocated inside malloc. Nothing leaks. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static void *work(void *arg)
{
    int sizes = (int)(long)arg;
    for (int i = 0; i < sizes; i++)
        free(malloc(16 + 16 * (size_t)i));
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 4, sizes = argc > 2 ? atoi(argv[2]) : 5;
    for (int t = 0; t < threads; t++) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, work, (void *)(long)sizes) || pthread_join(thread, NULL))
            return 1;
    }
    printf("THREADS %d SIZES %d\n", threads, sizes);
    return 0;
}
