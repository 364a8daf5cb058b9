// Catches std::bad_alloc from operator new (plain and aligned) ROUNDS times,
// as a server refusing an oversized request does, then leaks through new in
// Parser::keep. Prints CAUGHT n: a traced program must catch every one.
#include <cstdio>
#include <new>

extern "C" {
#include "leaky.h"
}

enum { ROUNDS = 8, KEPT = 12 };

struct alignas(64) Wide {
    char bytes[128];
};

class Parser {
public:
    __attribute__((noinline)) int refuse_huge();
    __attribute__((noinline)) void keep() { kept[n++] = new Wide(); }

private:
    Wide *kept[KEPT];
    int n = 0;
};

int Parser::refuse_huge()
{
    int caught = 0;
    volatile size_t huge = (size_t)1 << 62;
    try {
        char *p = new char[huge];
        std::printf("allocated %p\n", (void *)p);
    } catch (std::bad_alloc const &) {
        caught++;
    }
    try {
        void *p = ::operator new(huge, std::align_val_t(64));
        std::printf("allocated %p\n", p);
    } catch (std::bad_alloc const &) {
        caught++;
    }
    return caught;
}

int main()
{
    static Parser parser;
    wait_for_go();
    int caught = 0;
    for (int i = 0; i < ROUNDS; i++)
        caught += parser.refuse_huge();
    for (int i = 0; i < KEPT; i++)
        parser.keep();
    std::printf("CAUGHT %d\n", caught);
    report_site("Parser::keep", KEPT * sizeof(Wide), KEPT);
    report_leaked(KEPT * sizeof(Wide), KEPT);
    linger();
    return 0;
}
