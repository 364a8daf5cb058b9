/* Shared library for the symbolizer tests (built with -shared -fPIC). */
__attribute__((noinline)) int shape_area(int width, int height)
{
    return width * height;
}
