/* Known reachability (leaktrace --reachability; protocol in leaky.h):
 *   keep_in_list   KEPT nodes on a global list                 reachable
 *   drop_buffers   DROPPED string buffers, pointers dropped    unreferenced
 *   chain_head     the head of a chain, pointer dropped        unreferenced
 *   chain_link     LINKS nodes hanging off that head           indirectly lost
 * Sizes are multiples of 16, so no block ends where glibc keeps the header
 * of the next chunk (a pointer the allocator itself holds would then land
 * inside it). No pointer is left in a live stack frame or register:
 * scrub_stack() overwrites the dead frames, and each site is its own
 * non-inlined function. Each buffer holds "request #N GET /leaked/path". */
#include <string.h>
#include "leaky.h"

#define KEPT 12
#define DROPPED 20
#define LINKS 6
#define NODE 64
#define BUFFER 96
#define LINK 128

struct node {
    struct node *next;
    char payload[NODE - sizeof(struct node *)];
};

static struct node *kept; /* a global: the list is reachable */

__attribute__((noinline)) static void keep_in_list(void)
{
    for (int i = 0; i < KEPT; i++) {
        struct node *n = malloc(NODE);
        memset(n->payload, 'k', sizeof n->payload);
        n->next = kept;
        kept = n;
    }
}

__attribute__((noinline)) static void drop_buffers(void)
{
    for (int i = 0; i < DROPPED; i++) {
        char *buffer = malloc(BUFFER);
        memset(buffer, 0, BUFFER);
        snprintf(buffer, BUFFER, "request #%d GET /leaked/path", i);
    }
}

__attribute__((noinline)) static struct node *chain_link(struct node *next)
{
    struct node *n = malloc(LINK);
    memset(n->payload, 'c', sizeof n->payload);
    n->next = next;
    return n;
}

__attribute__((noinline)) static void chain_head(void)
{
    struct node *list = NULL;
    for (int i = 0; i < LINKS; i++)
        list = chain_link(list);
    struct node *head = malloc(NODE);
    memset(head->payload, 'h', sizeof head->payload);
    head->next = list;
}

__attribute__((noinline)) static void scrub_stack(void)
{
    volatile char dead[16384];
    memset((char *)dead, 0, sizeof dead);
}

int main(void)
{
    wait_for_go();
    keep_in_list();
    drop_buffers();
    chain_head();
    scrub_stack();
    report_site("keep_in_list", KEPT * NODE, KEPT);
    report_site("drop_buffers", DROPPED * BUFFER, DROPPED);
    report_site("chain_head", NODE, 1);
    report_site("chain_link", LINKS * LINK, LINKS);
    report_leaked(DROPPED * BUFFER + NODE + LINKS * LINK, DROPPED + 1 + LINKS);
    linger();
    return 0;
}
