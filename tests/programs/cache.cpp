// A C++ leak: Cache::insert(std::string const&) news an Entry that nothing
// deletes. Entry holds a fixed-size key, so the only allocation under
// Cache::insert is the new itself (no std::string heap buffer).
#include <cstdio>
#include <cstring>
#include <string>

extern "C" {
#include "leaky.h"
}

struct Entry {
    char key[40];
    unsigned long hits;
    char payload[208];
    Entry *next;
};

class Cache {
public:
    void insert(std::string const &key);
    size_t size() const { return entries; }

private:
    Entry *head = nullptr;
    size_t entries = 0;
};

void Cache::insert(std::string const &key)
{
    Entry *entry = new Entry();
    std::strncpy(entry->key, key.c_str(), sizeof entry->key - 1);
    entry->next = head;
    head = entry;
    entries++;
}

int main()
{
    static Cache cache;  // static: never destroyed, the entries stay
    const int inserts = 64;

    wait_for_go();
    for (int i = 0; i < inserts; i++)
        cache.insert("k" + std::to_string(i));
    report_site("Cache::insert", cache.size() * sizeof(Entry), cache.size());
    report_leaked(cache.size() * sizeof(Entry), cache.size());
    linger();
    return 0;
}
