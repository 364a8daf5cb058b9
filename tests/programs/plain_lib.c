/* A shared library that defines no allocator function: not a valid --obj,
 * and, linked against jemalloc, a way to load jemalloc after libc. */
int plain_lib_answer(void)
{
    return 42;
}
