/* A shared library that leaks: built by the tests as libleak.so. */
#include <stdlib.h>
#include <string.h>

#define LIB_BLOCK 512

size_t lib_leak(int blocks)
{
    for (int i = 0; i < blocks; i++)
        memset(malloc(LIB_BLOCK), i, LIB_BLOCK);
    return (size_t)blocks * LIB_BLOCK;
}
