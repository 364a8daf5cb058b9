/* Two threads side by side: leaky_worker keeps every block; tidy_worker
 * holds its blocks for 300 ms, then frees them all before LEAKED is printed. */
#include <pthread.h>
#include "leaky.h"

#define BLOCKS 100
#define LEAKY_SIZE 700
#define TIDY_SIZE 900

static void *leaky_worker(void *unused)
{
    (void)unused;
    for (int i = 0; i < BLOCKS; i++)
        ((char *)malloc(LEAKY_SIZE))[0] = 1;
    return NULL;
}

static void *tidy_worker(void *unused)
{
    void *blocks[BLOCKS];
    (void)unused;
    for (int i = 0; i < BLOCKS; i++)
        blocks[i] = malloc(TIDY_SIZE);
    usleep(300 * 1000);
    for (int i = 0; i < BLOCKS; i++)
        free(blocks[i]);
    return NULL;
}

int main(void)
{
    pthread_t leaky, tidy;

    wait_for_go();
    pthread_create(&leaky, NULL, leaky_worker, NULL);
    pthread_create(&tidy, NULL, tidy_worker, NULL);
    pthread_join(leaky, NULL);
    pthread_join(tidy, NULL);
    report_site("leaky_worker", (size_t)BLOCKS * LEAKY_SIZE, BLOCKS);
    report_site("tidy_worker", 0, 0);
    report_leaked((size_t)BLOCKS * LEAKY_SIZE, BLOCKS);
    linger();
    return 0;
}
