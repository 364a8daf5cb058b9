// C++ leaks through every kind of operator new, one method of Store each.
// Each keep_* call keeps one block and deletes another of the same kind
// (sized, aligned and array delete), so frees must be seen too. Blocks made
// before "go" are deleted after it: frees of blocks the tracer never saw.
// With argv[1] == "clean" every kept block is deleted too: nothing leaks.
#include <cstring>
#include <new>
#include <vector>

extern "C" {
#include "leaky.h"
}

struct Plain {
    char bytes[264];
};

struct alignas(64) Aligned {
    char bytes[320];
};

enum { EACH = 24, EARLY = 16, ARRAY = 300 };

class Store {
public:
    void keep_plain();
    void keep_array();
    void keep_nothrow();
    void keep_aligned();
    void keep_aligned_nothrow();
    void release();
    void reserve(size_t n)  // before "go": the vectors' own blocks are not the leak
    {
        plain.reserve(2 * n);
        arrays.reserve(n);
        aligned.reserve(2 * n);
    }

private:
    std::vector<Plain *> plain;
    std::vector<char *> arrays;
    std::vector<Aligned *> aligned;
};

__attribute__((noinline)) void Store::keep_plain()
{
    plain.push_back(new Plain());
    delete new Plain();
}

__attribute__((noinline)) void Store::keep_array()
{
    arrays.push_back(new char[ARRAY]());
    delete[] new char[ARRAY]();
}

__attribute__((noinline)) void Store::keep_nothrow()
{
    plain.push_back(new (std::nothrow) Plain());
    delete new (std::nothrow) Plain();
}

__attribute__((noinline)) void Store::keep_aligned()
{
    aligned.push_back(new Aligned());
    delete new Aligned();
}

__attribute__((noinline)) void Store::keep_aligned_nothrow()
{
    aligned.push_back(new (std::nothrow) Aligned());
    delete new (std::nothrow) Aligned();
}

void Store::release()
{
    for (Plain *p : plain)
        delete p;
    for (char *a : arrays)
        delete[] a;
    for (Aligned *a : aligned)
        delete a;
    plain.clear();
    arrays.clear();
    aligned.clear();
}

int main(int argc, char **argv)
{
    bool clean = argc > 1 && std::strcmp(argv[1], "clean") == 0;
    static Store store;  // static: never destroyed, the kept blocks stay
    static Store early;
    for (int i = 0; i < EARLY; i++)
        early.keep_plain();
    store.reserve(EACH);

    wait_for_go();
    early.release();  // EARLY blocks made before tracing: unknown frees
    for (int i = 0; i < EACH; i++) {
        store.keep_plain();
        store.keep_array();
        store.keep_nothrow();
        store.keep_aligned();
        store.keep_aligned_nothrow();
    }
    if (clean)
        store.release();
    size_t n = clean ? 0 : EACH;
    report_site("Store::keep_plain", n * sizeof(Plain), n);
    report_site("Store::keep_array", n * ARRAY, n);
    report_site("Store::keep_nothrow", n * sizeof(Plain), n);
    report_site("Store::keep_aligned", n * sizeof(Aligned), n);
    report_site("Store::keep_aligned_nothrow", n * sizeof(Aligned), n);
    report_leaked(n * (2 * sizeof(Plain) + ARRAY + 2 * sizeof(Aligned)), 5 * n);
    linger();
    return 0;
}
