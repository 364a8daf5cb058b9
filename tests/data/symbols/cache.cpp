// C++ program for the demangling tests: a method taking a std::string.
#include <cstdio>
#include <map>
#include <string>

class Cache {
public:
    __attribute__((noinline)) void insert(std::string const &key);
private:
    std::map<std::string, int> entries_;
};

void Cache::insert(std::string const &key)
{
    entries_[key] += 1;
}

int main()
{
    Cache cache;
    cache.insert("answer");
    std::printf("ready\n");
    std::fflush(stdout);
    while (std::getchar() != EOF)
        ;
    return 0;
}
