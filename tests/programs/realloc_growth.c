/* Realloc growth: a table of record pointers grows by doubling through
 * realloc (starting from realloc(NULL, ...)); every record is malloc'd, the
 * even ones are freed again. Leaked: the final table (one block, its last
 * size) and the odd records. A tracer that does not treat realloc as
 * free(old) + alloc(new) reports every intermediate table as well. */
#include "leaky.h"

#define RECORDS 300
#define RECORD_SIZE 96

static void **table;
static size_t capacity;

static void grow_table(size_t needed)
{
    size_t wanted = capacity ? capacity : 4;
    while (wanted < needed)
        wanted *= 2;
    if (wanted != capacity) {
        table = realloc(table, wanted * sizeof *table);
        capacity = wanted;
    }
}

static void *make_record(int id)
{
    char *record = malloc(RECORD_SIZE);
    snprintf(record, RECORD_SIZE, "record %d", id);
    return record;
}

int main(void)
{
    size_t leaked_records = 0;

    wait_for_go();
    for (int i = 0; i < RECORDS; i++) {
        grow_table(i + 1);
        table[i] = make_record(i);
    }
    for (int i = 0; i < RECORDS; i += 2)
        free(table[i]);
    leaked_records = RECORDS / 2;
    report_site("grow_table", capacity * sizeof *table, 1);
    report_site("make_record", leaked_records * RECORD_SIZE, leaked_records);
    report_leaked(capacity * sizeof *table + leaked_records * RECORD_SIZE, 1 + leaked_records);
    linger();
    return 0;
}
