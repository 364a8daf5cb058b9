// C++ objects that only other lost objects point at (leaktrace --reachability;
// protocol in leaky.h). make_tree() news a Tree whose vector holds LEAVES
// Leaf objects, each with a heap std::string name. keep_tree() keeps its tree
// in a global (all reachable); drop_tree() drops its pointer: the Tree is
// unreferenced, and its vector storage, leaves and names are indirectly lost
// (only the lost Tree leads to them). Sizes avoid ending where glibc keeps the
// next chunk's header (see reach_classes.c): Tree and Leaf are 32 and 48
// bytes, the vector 8 * LEAVES, each name 41.
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "leaky.h"
}

const int LEAVES = 10;

struct Leaf {
    explicit Leaf(int i) : name(40, 'a' + i % 26), id(i) {}
    std::string name;  // 40 characters: on the heap, not in the object
    long id;
    long spare = 0;
};

struct Tree {
    std::vector<Leaf *> leaves;
    long generation = 0;
};

static Tree *kept;

__attribute__((noinline)) static Tree *make_tree()
{
    Tree *tree = new Tree();
    tree->leaves.reserve(LEAVES);
    for (int i = 0; i < LEAVES; i++)
        tree->leaves.push_back(new Leaf(i));
    return tree;
}

__attribute__((noinline)) static void keep_tree() { kept = make_tree(); }

__attribute__((noinline)) static void drop_tree()
{
    Tree *lost = make_tree();
    lost->generation = 1;
}

__attribute__((noinline)) static void scrub_stack()
{
    volatile char dead[16384];
    std::memset(const_cast<char *>(dead), 0, sizeof dead);
}

int main()
{
    static_assert(sizeof(Tree) == 32 && sizeof(Leaf) == 48, "sizes the test relies on");
    wait_for_go();
    keep_tree();
    drop_tree();
    scrub_stack();
    // per tree: the Tree, its vector storage, LEAVES leaves and LEAVES names
    size_t bytes = sizeof(Tree) + LEAVES * sizeof(Leaf *) + LEAVES * (sizeof(Leaf) + 41);
    report_site("drop_tree", bytes, 2 + 2 * LEAVES);
    report_leaked(bytes, 2 + 2 * LEAVES);
    linger();
    return 0;
}
