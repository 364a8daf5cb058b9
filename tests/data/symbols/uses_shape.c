/* Links against libshape.so so the library is mapped while it waits. */
#include <stdio.h>

int shape_area(int width, int height);

int main(void)
{
    printf("ready %d\n", shape_area(2, 3));
    fflush(stdout);
    while (getchar() != EOF)
        ;
    return 0;
}
