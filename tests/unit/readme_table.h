/* Shared by the config tests of every daemon: the README's configuration
 * tables are the documentation, so every key of a daemon's table must have
 * a row "| `KEY` | `default` | meaning |" (or "(empty)") with the default
 * the code uses. Include after <cmocka.h>. The README is found from this
 * file's path (tests/unit/ -> ../../README.md). */
#ifndef M2M_TEST_README_TABLE_H
#define M2M_TEST_README_TABLE_H

#include <stdio.h>
#include <string.h>
#include "m2m/config.h"

static void assert_readme_documents(const m2m_cfg_entry *table, size_t n)
{
    char path[1024];
    const char *src = __FILE__;
    const char *cut = strstr(src, "tests/unit/readme_table.h");
    if (!cut || src[0] != '/')
        fail_msg("cannot locate README.md from __FILE__ = %s", src);
    snprintf(path, sizeof(path), "%.*sREADME.md", (int)(cut - src), src);
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("cannot open %s", path);
    static char text[1 << 18];
    size_t len = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[len] = '\0';

    for (size_t i = 0; i < n; i++) {
        const m2m_cfg_entry *e = &table[i];
        char row[128], doc[256];
        snprintf(row, sizeof(row), "\n| `%s` | ", e->key);
        const char *p = strstr(text, row);
        if (!p)
            fail_msg("README.md has no row for %s", e->key);
        p += strlen(row);
        len = strcspn(p, "|\n");
        while (len && p[len - 1] == ' ')
            len--;
        snprintf(doc, sizeof(doc), "%.*s", (int)len, p);
        if (strcmp(doc, "(empty)") == 0) {
            if (e->def[0] != '\0')
                fail_msg("%s: README says (empty), code default is \"%s\"", e->key, e->def);
            continue;
        }
        len = strlen(doc);
        if (len < 2 || doc[0] != '`' || doc[len - 1] != '`' || strlen(e->def) != len - 2 ||
            strncmp(doc + 1, e->def, len - 2) != 0)
            fail_msg("%s: README default %s, code default \"%s\"", e->key, doc, e->def);
    }
}

#endif
