/* The fibonacci case: a worker thread calls fibonacci() CALLS times; each
 * call callocs a table of 1024 long longs and never frees it.
 * Usage: fibonacci [CALLS]   (default 50). Built dynamic and -static. */
#include <pthread.h>
#include "leaky.h"

#define TABLE_LEN 1024

static long long fibonacci(int n)
{
    long long *table = calloc(TABLE_LEN, sizeof(long long));
    table[0] = 0;
    table[1] = 1;
    for (int i = 2; i <= n && i < TABLE_LEN; i++)
        table[i] = table[i - 1] + table[i - 2];
    return table[n % TABLE_LEN];
}

static void *worker(void *arg)
{
    int calls = *(int *)arg;
    long long sum = 0;
    for (int i = 0; i < calls; i++)
        sum += fibonacci(i % 90);
    return (void *)(long)(sum & 1);
}

int main(int argc, char **argv)
{
    int calls = argc > 1 ? atoi(argv[1]) : 50;
    pthread_t thread;

    wait_for_go();
    pthread_create(&thread, NULL, worker, &calls);
    pthread_join(thread, NULL);
    report_site("fibonacci", (size_t)calls * TABLE_LEN * sizeof(long long), calls);
    report_leaked((size_t)calls * TABLE_LEN * sizeof(long long), calls);
    linger();
    return 0;
}
