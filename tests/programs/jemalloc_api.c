/* Leaks through jemalloc's own API: mallocx (plain and aligned), rallocx and
 * xallocx (grown in place: the block's size is what xallocx returns).
 * Each keep_* call also frees a block with sdallocx or dallocx. */
#include <jemalloc/jemalloc.h>

#include "leaky.h"

enum { EACH = 20 };

static void *kept[4 * EACH];
static int n_kept;
static size_t grown_bytes;

__attribute__((noinline)) static void keep_mallocx(void)
{
    kept[n_kept++] = mallocx(200, 0);
    sdallocx(mallocx(200, 0), 200, 0);
}

__attribute__((noinline)) static void keep_aligned_mallocx(void)
{
    kept[n_kept++] = mallocx(100, MALLOCX_ALIGN(64));
    dallocx(mallocx(100, MALLOCX_ALIGN(64)), 0);
}

__attribute__((noinline)) static void keep_rallocx(void)
{
    void *block = mallocx(64, 0);
    kept[n_kept++] = rallocx(block, 3000, 0);
}

__attribute__((noinline)) static void keep_xallocx(void)
{
    void *block = mallocx(5000, 0);
    grown_bytes += xallocx(block, 9000, 0, 0); /* the size it has now, moved or not */
    kept[n_kept++] = block;
}

int main(void)
{
    wait_for_go();
    for (int i = 0; i < EACH; i++) {
        keep_mallocx();
        keep_aligned_mallocx();
        keep_rallocx();
        keep_xallocx();
    }
    report_site("keep_mallocx", EACH * 200, EACH);
    report_site("keep_aligned_mallocx", EACH * 100, EACH);
    report_site("keep_rallocx", EACH * 3000, EACH);
    report_site("keep_xallocx", grown_bytes, EACH);
    report_leaked(EACH * 3300 + grown_bytes, 4 * EACH);
    linger();
    return 0;
}
