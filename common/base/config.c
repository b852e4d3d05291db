/*
 * config.c - deployq.yaml: built-in defaults, the file (libfyaml), ${NAME} references and
 * the environment overrides (see config.h for the contract, docs/configuration.md for the
 * keys). This is the only file that knows YAML: every other module reads its section as
 * cJSON (dq_config_view) with the `file:line` of each item (dq_config_where).
 *
 * The document is parsed without libfyaml resolving anything: its duplicate-key check and
 * its alias resolution are quadratic in 0.7.12 (a mapping of 20,000 services took 20 s), and
 * the resolution has no bound (a 600-byte alias bomb grew to gigabytes). This module checks
 * keys and aliases itself in one linear walk, with limits, and only then expands aliases
 * and merge keys (expand_aliases).
 *
 * A load then makes four passes over the document. First every scalar is resolved
 * (${NAME} replaced) into the node's meta data, so a missing variable fails the load
 * whichever section holds it, each resolved value is registered for redaction before
 * anything could log it, and later readers never see the raw references. Then the document
 * becomes the view: a cJSON tree, with the line of every item (and the spelling of every
 * scalar that is not a string) in a table beside it; the document is freed. Then the
 * sections this module owns are read from the view into dq_config. Last come the checks
 * that span entries (`requires` targets and cycles).
 */
#include "config.h"

#include <errno.h>
#include <libfyaml.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "event.h"
#include "json.h"
#include "log.h"
#include "util.h"

#ifndef DQ_SCHEMAS_INSTALLED
#define DQ_SCHEMAS_INSTALLED "/usr/local/share/deployq/schemas"
#endif
#ifndef DQ_SCHEMAS_SOURCE
#define DQ_SCHEMAS_SOURCE "schemas"
#endif

#define DEFAULT_REDIS_URL "redis://127.0.0.1:6379"
#define DEFAULT_REDIS_TIMEOUT_MS 2000
#define DEFAULT_MAX_REQUEST_BYTES 65536
#define DEFAULT_MAX_DEPTH 16
#define DEFAULT_ISSUED_AT_WINDOW_MS 300000
#define KEY_BYTES 32 /* an Ed25519 public key */
#define NAME_MAX_LEN 63
#define CONFIG_MAX_BYTES (4 * 1024 * 1024) /* far above any real configuration */
/* Limits on what aliases may do (docs/configuration.md, "Anchors and aliases"). Nodes: a
 * plain file of CONFIG_MAX_BYTES holds at most about 2,000,000, so aliases cannot make a
 * document much bigger than the largest file allowed. Anchors: libfyaml 0.7 scans its list
 * of anchors for every node it copies or frees, so each anchor costs time per node. */
#define ALIAS_NODES_MAX 250000
#define ANCHORS_MAX 1000
#define NESTING_MAX 128 /* mappings and sequences inside each other, aliases expanded */

/* The top-level keys: the sections this module reads, then those later workers read from
 * the view themselves. */
static const char *const top_level_keys[] = {
    "kafka", "redis", "validator", "topics", "schemas_dir", "keys", "services",
    "providers", "executor", "monitor", "rollback", "registry", "notifications", "locks",
    "health", "drift", NULL,
};

/* What this module keeps as a node's libfyaml meta data: for a scalar, its resolved text;
 * for a mapping or sequence copied in place of an alias, the alias's line (libfyaml gives
 * such a copy no parent, which is where node_line() would find it). */
typedef struct node_meta {
    int from_env; /* the text held a ${NAME} reference: it is a string, whatever it looks like */
    int line;     /* a copy made for an alias: the alias's line; 0 otherwise */
    char text[];
} node_meta;

/* What every reader needs to report "name:line: message". */
typedef struct loader {
    const char *name;
    const char *path; /* the file read, or NULL for a string */
    const char *dir; /* directory of the file, for a relative schemas_dir; NULL for strings */
    char *err;
    size_t errlen;
    dq_config *cfg;
    struct fy_document *doc; /* the parsed file until it became the view; NULL after */
    char num[32];            /* a number of a view built by hand, as text (text_of) */
    /* The top-level sections whose ${NAME} references must be set (NULL-terminated), or
     * NULL for all of them: a reading verb loads the running stack's file without the
     * provider tokens it never uses (dq_config_load_sections). */
    const char *const *strict;
} loader;

typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static int node_line(struct fy_node *node);

/*
 * The view: the document as one cJSON tree (cfg->tree->root), and beside it, for every
 * item, where it was written. The table is keyed by the item's address and never changes
 * once the load is done, so readers on several threads share it. A cJSON built by hand
 * (dq_config_from_json, a unit test) has no entries: its positions are unknown (line 0).
 */
typedef struct pos {
    const cJSON *item;   /* NULL: an empty slot */
    char *text;          /* a scalar that is not a string: its spelling in the file ("0x1F",
                            "True", "~"); NULL for a string, a collection or an empty value */
    int line;            /* the value's line; a mapping or list under a key: the key's */
    int key_line : 31;   /* the line of the key it is the value of; a list item's own line */
    unsigned plain : 1;  /* a scalar written plain (no quotes), whatever type it became */
} pos;

struct dq_config_tree {
    cJSON *root;
    pos *slot;
    size_t cap, n; /* cap is 0 or a power of two, above twice n */
};

static uint64_t table_hash(const void *key, size_t len);
#define PTR_KEY ((size_t)-1)

static const pos *pos_find(const struct dq_config_tree *t, const cJSON *item)
{
    if (t == NULL || item == NULL || t->cap == 0)
        return NULL;
    for (size_t i = (size_t)table_hash(item, PTR_KEY) & (t->cap - 1); t->slot[i].item != NULL;
         i = (i + 1) & (t->cap - 1))
        if (t->slot[i].item == item)
            return &t->slot[i];
    return NULL;
}

/* "name:line: message" in the caller's buffer ("name: message" when line is 0). */
static void vfail(loader *ld, int line, const char *fmt, va_list ap)
{
    char msg[768];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (ld->err != NULL && ld->errlen > 0) {
        if (line > 0)
            snprintf(ld->err, ld->errlen, "%s:%d: %s", ld->name, line, msg);
        else
            snprintf(ld->err, ld->errlen, "%s: %s", ld->name, msg);
    }
}

static int fail_at(loader *ld, struct fy_node *node, const char *fmt, ...) DQ_PRINTF(3, 4);
static int fail_item(loader *ld, const cJSON *item, const char *fmt, ...) DQ_PRINTF(3, 4);
static int fail_key(loader *ld, const cJSON *item, const char *fmt, ...) DQ_PRINTF(3, 4);

/* An error at a node of the document (parsing, aliases, references). */
static int fail_at(loader *ld, struct fy_node *node, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(ld, node_line(node), fmt, ap);
    va_end(ap);
    return -1;
}

/* An error at an item of the view: the line of its value (of its key, for a mapping or a
 * list under a key); no line for an item built by hand. */
static int fail_item(loader *ld, const cJSON *item, const char *fmt, ...)
{
    const struct pos *p = pos_find(ld->cfg->tree, item);
    va_list ap;
    va_start(ap, fmt);
    vfail(ld, p != NULL ? p->line : 0, fmt, ap);
    va_end(ap);
    return -1;
}

/* An error at the key that introduces an item of the view. */
static int fail_key(loader *ld, const cJSON *item, const char *fmt, ...)
{
    const struct pos *p = pos_find(ld->cfg->tree, item);
    va_list ap;
    va_start(ap, fmt);
    vfail(ld, p != NULL ? p->key_line : 0, fmt, ap);
    va_end(ap);
    return -1;
}

static int set_str(char **dst, const char *s)
{
    char *copy = strdup(s);
    if (copy == NULL)
        return -1;
    free(*dst);
    *dst = copy;
    return 0;
}

static int buf_add(buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

/*
 * A small open-addressing hash table, so that no check of the file is quadratic: a key is
 * either text (key, len: compared by content) or a pointer (len == PTR_KEY: compared by
 * address). Keys are borrowed, never copied: they must outlive the table.
 */

typedef struct table_slot {
    const void *key; /* NULL: an empty slot */
    size_t len;
    void *value;
} table_slot;

typedef struct table {
    table_slot *slot;
    size_t cap, n; /* cap is 0 or a power of two */
} table;

static uint64_t table_hash(const void *key, size_t len)
{
    const unsigned char *p = len == PTR_KEY ? (const unsigned char *)&key : key;
    size_t n = len == PTR_KEY ? sizeof key : len;
    uint64_t h = 14695981039346656037ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h ^ (h >> 29);
}

static table_slot *table_find(const table *t, const void *key, size_t len)
{
    if (t->cap == 0)
        return NULL;
    size_t i = (size_t)table_hash(key, len) & (t->cap - 1);
    for (; t->slot[i].key != NULL; i = (i + 1) & (t->cap - 1)) {
        const table_slot *s = &t->slot[i];
        if (s->len == len && (len == PTR_KEY ? s->key == key : memcmp(s->key, key, len) == 0))
            return &t->slot[i];
    }
    return NULL;
}

static void *table_get(const table *t, const void *key, size_t len)
{
    table_slot *s = table_find(t, key, len);
    return s != NULL ? s->value : NULL;
}

/* Set key to value (replacing an earlier value). 0, or -1 when out of memory. */
static int table_put(table *t, const void *key, size_t len, void *value)
{
    table_slot *s = table_find(t, key, len);
    if (s != NULL) {
        s->value = value;
        return 0;
    }
    if ((t->n + 1) * 2 > t->cap) {
        size_t cap = t->cap != 0 ? t->cap * 2 : 16;
        table_slot *slot = calloc(cap, sizeof *slot);
        if (slot == NULL)
            return -1;
        for (size_t i = 0; i < t->cap; i++) {
            if (t->slot[i].key == NULL)
                continue;
            size_t j = (size_t)table_hash(t->slot[i].key, t->slot[i].len) & (cap - 1);
            while (slot[j].key != NULL)
                j = (j + 1) & (cap - 1);
            slot[j] = t->slot[i];
        }
        free(t->slot);
        t->slot = slot;
        t->cap = cap;
    }
    size_t i = (size_t)table_hash(key, len) & (t->cap - 1);
    while (t->slot[i].key != NULL)
        i = (i + 1) & (t->cap - 1);
    t->slot[i] = (table_slot){.key = key, .len = len, .value = value};
    t->n++;
    return 0;
}

static void table_free(table *t)
{
    free(t->slot);
    *t = (table){0};
}

static int is_name_start(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int is_name_char(char c)
{
    return is_name_start(c) || (c >= '0' && c <= '9');
}

/*
 * Resolve the references in s[0..len): "${NAME}" becomes the variable's value, "$${" a
 * literal "${". Returns a malloc'd string and sets *from_env when a variable was used; NULL
 * with the reason in why otherwise. The reason names a variable, never a value.
 */
static char *expand(const char *s, size_t len, int *from_env, int *unset, char *why,
                    size_t whylen)
{
    buf b = {0};
    size_t i = 0;

    *from_env = 0;
    if (buf_add(&b, "", 0) < 0)
        goto oom;
    while (i < len) {
        if (s[i] == '$' && i + 2 < len && s[i + 1] == '$' && s[i + 2] == '{') {
            if (buf_add(&b, "${", 2) < 0)
                goto oom;
            i += 3;
            continue;
        }
        if (s[i] != '$' || i + 1 >= len || s[i + 1] != '{') {
            if (buf_add(&b, s + i, 1) < 0)
                goto oom;
            i++;
            continue;
        }
        size_t start = i + 2, end = start;
        while (end < len && s[end] != '}')
            end++;
        if (end >= len) {
            snprintf(why, whylen, "unterminated ${ reference (write $${ for a literal ${)");
            goto fail;
        }
        int valid = end > start && is_name_start(s[start]);
        for (size_t k = start; valid && k < end; k++)
            valid = is_name_char(s[k]);
        if (!valid) {
            snprintf(why, whylen,
                     "${%.*s} is not a valid reference: a name is letters, digits and _",
                     (int)(end - start > 64 ? 64 : end - start), s + start);
            goto fail;
        }
        char name[256];
        if (end - start >= sizeof name) {
            snprintf(why, whylen, "${%.64s...} names a variable that is too long", s + start);
            goto fail;
        }
        memcpy(name, s + start, end - start);
        name[end - start] = '\0';
        const char *value = getenv(name);
        if (value == NULL) {
            *unset = 1;
            snprintf(why, whylen, "${%s} is not set in the environment", name);
            goto fail;
        }
        /* A reference is how a secret is written in this file: mask it from now on. */
        dq_log_redact(value);
        if (buf_add(&b, value, strlen(value)) < 0)
            goto oom;
        *from_env = 1;
        i = end + 1;
    }
    return b.p;

oom:
    snprintf(why, whylen, "out of memory");
fail:
    free(b.p);
    return NULL;
}

static void meta_clear(struct fy_node *node, void *meta, void *user)
{
    free(meta);
}

static int set_meta(loader *ld, struct fy_node *node, const char *text, size_t len, int from_env)
{
    node_meta *m = malloc(sizeof *m + len + 1);
    if (m == NULL)
        return fail_at(ld, node, "out of memory");
    m->from_env = from_env;
    m->line = 0;
    memcpy(m->text, text, len);
    m->text[len] = '\0';
    if (fy_node_set_meta(node, m) != 0) {
        free(m);
        return fail_at(ld, node, "out of memory");
    }
    return 0;
}

/* Whether the top-level section named by key must have every ${NAME} set: all of them
 * unless the loader was given a list (loader.strict). */
static int section_strict(const loader *ld, struct fy_node *key)
{
    const char *name;
    size_t len = 0;

    if (ld->strict == NULL)
        return 1;
    name = key && fy_node_get_type(key) == FYNT_SCALAR ? fy_node_get_scalar(key, &len) : NULL;
    for (size_t i = 0; name && ld->strict[i]; i++)
        if (strlen(ld->strict[i]) == len && memcmp(ld->strict[i], name, len) == 0)
            return 1;
    return 0;
}

/*
 * Store the resolved text of every scalar below node as its meta data. Keys are taken
 * literally (a key is a name, not a secret). A value left empty ("key:") gets no meta:
 * the view holds it as null with no text. Recursion is bounded by NESTING_MAX, which
 * expand_aliases() checked.
 */
static int resolve_tree(loader *ld, struct fy_node *node, int is_key, int strict)
{
    if (node == NULL)
        return 0;
    switch (fy_node_get_type(node)) {
    case FYNT_SCALAR: {
        if (fy_node_get_scalar_token(node) == NULL)
            return 0;
        size_t len = 0;
        const char *raw = fy_node_get_scalar(node, &len);
        if (raw == NULL)
            raw = "";
        if (is_key || memchr(raw, '$', len) == NULL)
            return set_meta(ld, node, raw, len, 0);
        char why[400];
        int from_env, unset = 0;
        char *text = expand(raw, len, &from_env, &unset, why, sizeof why);
        /* Outside the sections the program uses, an unset variable is not its problem:
         * 1 tells the caller to drop the value, as if it had never been written. */
        if (text == NULL && unset && !strict)
            return 1;
        if (text == NULL)
            return fail_at(ld, node, "%s", why);
        int rc = set_meta(ld, node, text, strlen(text), from_env);
        free(text);
        return rc;
    }
    case FYNT_SEQUENCE: {
        void *it = NULL;
        struct fy_node *item, *drop[64];
        size_t n_drop = 0;
        int rc;
        while ((item = fy_node_sequence_iterate(node, &it)) != NULL) {
            if ((rc = resolve_tree(ld, item, 0, strict)) < 0)
                return -1;
            if (rc == 1 && n_drop == sizeof drop / sizeof drop[0])
                return fail_at(ld, item, "too many unset ${...} references in one list");
            if (rc == 1)
                drop[n_drop++] = item;
        }
        for (size_t i = 0; i < n_drop; i++)
            fy_node_free(fy_node_sequence_remove(node, drop[i]));
        return 0;
    }
    case FYNT_MAPPING: {
        void *it = NULL;
        struct fy_node_pair *pair;
        struct fy_node *drop[64];
        size_t n_drop = 0;
        int rc;
        while ((pair = fy_node_mapping_iterate(node, &it)) != NULL) {
            struct fy_node *key = fy_node_pair_key(pair);
            /* the top level decides per section; below it, the section's rule holds */
            int value_strict =
                node == fy_document_root(ld->doc) ? section_strict(ld, key) : strict;
            if (resolve_tree(ld, key, 1, strict) < 0 ||
                (rc = resolve_tree(ld, fy_node_pair_value(pair), 0, value_strict)) < 0)
                return -1;
            if (rc == 1 && n_drop == sizeof drop / sizeof drop[0])
                return fail_at(ld, key, "too many unset ${...} references in one mapping");
            if (rc == 1)
                drop[n_drop++] = key;
        }
        for (size_t i = 0; i < n_drop; i++)
            fy_node_free(fy_node_mapping_remove_by_key(node, drop[i]));
        return 0;
    }
    }
    return 0;
}

static const node_meta *meta_of(struct fy_node *node)
{
    if (node == NULL || fy_node_get_type(node) != FYNT_SCALAR)
        return NULL;
    return fy_node_get_meta(node);
}

/* YAML 1.2 core schema null: an empty value, or a plain null/Null/NULL/~. */
static int is_null(struct fy_node *node)
{
    if (node == NULL)
        return 1;
    if (fy_node_get_type(node) != FYNT_SCALAR)
        return 0;
    const node_meta *m = meta_of(node);
    if (m == NULL)
        return 1;
    size_t taglen = 0;
    if (m->from_env || fy_node_get_style(node) != FYNS_PLAIN || fy_node_get_tag(node, &taglen))
        return 0;
    return strcmp(m->text, "") == 0 || strcmp(m->text, "~") == 0 ||
           strcmp(m->text, "null") == 0 || strcmp(m->text, "Null") == 0 ||
           strcmp(m->text, "NULL") == 0;
}

static int is_mapping(struct fy_node *node)
{
    return node != NULL && fy_node_get_type(node) == FYNT_MAPPING;
}

static int is_sequence(struct fy_node *node)
{
    return node != NULL && fy_node_get_type(node) == FYNT_SEQUENCE;
}

/* The node to point at for a pair's value: the value, or the key when the value is absent. */
static struct fy_node *at(struct fy_node_pair *pair)
{
    struct fy_node *v = fy_node_pair_value(pair);
    return v != NULL ? v : fy_node_pair_key(pair);
}

/* The text of a scalar item (dq_config_text); a number of a view built by hand is printed
 * into the loader's buffer, valid until the next call. */
static const char *text_of(loader *ld, const cJSON *item)
{
    return dq_config_text(ld->cfg, item, ld->num, sizeof ld->num);
}

/* A member of a mapping of the view; NULL when absent or when obj is not a mapping. */
/* The first key of obj that allowed (NULL-terminated) does not list, with the message
 * "what: unknown key 'k' (known: a, b)" (what NULL: the top level) in msg; NULL when every
 * key is known or obj is not a mapping. The one check of unknown keys, public as
 * dq_config_check_keys(). */
static const cJSON *unknown_key(const cJSON *obj, const char *const allowed[], const char *what,
                                char *msg, size_t msglen)
{
    const cJSON *it;
    if (!cJSON_IsObject(obj))
        return NULL;
    cJSON_ArrayForEach(it, obj)
    {
        size_t i = 0;
        while (allowed[i] != NULL && strcmp(allowed[i], it->string) != 0)
            i++;
        if (allowed[i] != NULL)
            continue;
        char known[512];
        size_t n = 0;
        known[0] = '\0';
        for (i = 0; allowed[i] != NULL && n < sizeof known; i++) {
            int w = snprintf(known + n, sizeof known - n, "%s%s", i > 0 ? ", " : "", allowed[i]);
            n += w > 0 ? (size_t)w : 0;
        }
        if (what != NULL)
            snprintf(msg, msglen, "%s: unknown key '%.64s' (known: %s)", what, it->string, known);
        else
            snprintf(msg, msglen, "unknown top-level key '%.64s' (known: %s)", it->string, known);
        return it;
    }
    return NULL;
}

static int known_keys(loader *ld, const cJSON *obj, const char *const allowed[], const char *what)
{
    char msg[768];
    const cJSON *bad = unknown_key(obj, allowed, what, msg, sizeof msg);
    return bad != NULL ? fail_key(ld, bad, "%s", msg) : 0;
}

/* A string value, or an error naming path. Any scalar but null is taken as written. */
static int want_string(loader *ld, const cJSON *v, const char *path, const char **out)
{
    const char *s = text_of(ld, v);
    if (s == NULL || cJSON_IsNull(v))
        return fail_item(ld, v, "%s: must be a string", path);
    *out = s;
    return 0;
}

static int want_int(loader *ld, const cJSON *v, const char *path, long long min, long long max,
                    long long *out)
{
    const char *s = text_of(ld, v);
    if (s == NULL || dq_parse_int(s, min, max, out) < 0)
        return fail_item(ld, v, "%s: must be an integer from %lld to %lld", path, min, max);
    return 0;
}

static int want_duration(loader *ld, const cJSON *v, const char *path, int64_t *out)
{
    const char *s = text_of(ld, v);
    int64_t ms = s != NULL ? dq_duration_parse(s) : -1;
    if (ms <= 0)
        return fail_item(ld, v, "%s: must be a duration above zero such as 1500ms, 2s, 5m", path);
    *out = ms;
    return 0;
}

static int want_bool(loader *ld, const cJSON *v, const char *path, int *out)
{
    /* A boolean; and, as before the view existed, true/false written plain but made a
     * string (by !!str or a ${NAME} reference). */
    const pos *p = pos_find(ld->cfg->tree, v);
    const char *s = cJSON_IsString(v) && p != NULL && p->plain ? v->valuestring : NULL;
    if (cJSON_IsTrue(v) ||
        (s && (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0))) {
        *out = 1;
        return 0;
    }
    if (cJSON_IsFalse(v) ||
        (s && (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0))) {
        *out = 0;
        return 0;
    }
    return fail_item(ld, v, "%s: must be true or false", path);
}

/* A section must be a mapping; an empty one ("redis:" or "redis: {}") means defaults. */
static int want_mapping(loader *ld, const cJSON *v, const char *path, const cJSON **out)
{
    if (cJSON_IsNull(v)) {
        *out = NULL;
        return 0;
    }
    if (!cJSON_IsObject(v))
        return fail_item(ld, v, "%s: must be a mapping", path);
    *out = v;
    return 0;
}

static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > NAME_MAX_LEN)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 (i > 0 && (c == '.' || c == '_' || c == '-'));
        if (!ok)
            return 0;
    }
    return 1;
}

/* Kafka's own rule for topic names: 1..249 of [A-Za-z0-9._-]. */
static int valid_topic(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 249)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* A password written into a URL ("redis://user:pw@host") is a secret too. */
static void redact_url_password(const char *url)
{
    const char *p = strstr(url, "://");
    if (p == NULL)
        return;
    p += 3;
    const char *at_sign = strchr(p, '@');
    const char *slash = strchr(p, '/');
    if (at_sign == NULL || (slash != NULL && slash < at_sign))
        return;
    const char *colon = memchr(p, ':', (size_t)(at_sign - p));
    if (colon == NULL || at_sign - colon - 1 <= 0)
        return;
    char pw[512];
    size_t n = (size_t)(at_sign - colon - 1);
    if (n >= sizeof pw)
        n = sizeof pw - 1;
    memcpy(pw, colon + 1, n);
    pw[n] = '\0';
    dq_log_redact(pw);
}

static int kafka_key_is_secret(const char *key)
{
    return strstr(key, "password") != NULL || strstr(key, "secret") != NULL;
}

static char *default_schemas_dir(void)
{
    const char *env = getenv("DEPLOYQ_SCHEMAS");
    if (env != NULL && env[0] != '\0')
        return strdup(env);
    struct stat st;
    if (stat(DQ_SCHEMAS_INSTALLED, &st) == 0 && S_ISDIR(st.st_mode))
        return strdup(DQ_SCHEMAS_INSTALLED);
    return strdup(DQ_SCHEMAS_SOURCE);
}

/* Append a kafka.* pair (the caller made sure the key is new). 0, or -1 on allocation. */
static int kafka_add(dq_config *cfg, const char *key, const char *value)
{
    if (kafka_key_is_secret(key))
        dq_log_redact(value);
    dq_kv *grown = realloc(cfg->kafka, (cfg->n_kafka + 1) * sizeof *grown);
    if (grown == NULL)
        return -1;
    cfg->kafka = grown;
    char *k = strdup(key), *v = strdup(value);
    if (k == NULL || v == NULL) {
        free(k);
        free(v);
        return -1;
    }
    cfg->kafka[cfg->n_kafka].key = k;
    cfg->kafka[cfg->n_kafka].value = v;
    cfg->n_kafka++;
    return 0;
}

/* ---- lookups by name ---------------------------------------------------------------- */

/*
 * Services by name and environments by (service, name), built once when the services are
 * read, so that a lookup costs the same with 20,000 services as with two: `deployq check`
 * and the `requires` checks look up every environment.
 */
struct dq_config_index {
    size_t mask; /* slots - 1; slots is a power of two, at least twice the entries */
    struct index_slot {
        const dq_service *svc;     /* NULL: an empty slot */
        const dq_environment *env; /* NULL: the slot is for the service itself */
    } slot[];
};

static uint64_t index_hash(const dq_service *svc, const char *name)
{
    return table_hash(name, strlen(name)) ^ (svc != NULL ? table_hash(svc, PTR_KEY) : 0);
}

static const struct index_slot *index_find(const struct dq_config_index *ix,
                                           const dq_service *svc, const char *name)
{
    for (size_t i = (size_t)index_hash(svc, name) & ix->mask; ix->slot[i].svc != NULL;
         i = (i + 1) & ix->mask) {
        const struct index_slot *s = &ix->slot[i];
        if (svc == NULL ? s->env == NULL && strcmp(s->svc->name, name) == 0
                        : s->svc == svc && s->env != NULL && strcmp(s->env->name, name) == 0)
            return s;
    }
    return NULL;
}

static void index_add(struct dq_config_index *ix, const dq_service *svc,
                      const dq_environment *env)
{
    size_t i = (size_t)index_hash(env != NULL ? svc : NULL, env != NULL ? env->name : svc->name);
    for (i &= ix->mask; ix->slot[i].svc != NULL; i = (i + 1) & ix->mask)
        ;
    ix->slot[i].svc = svc;
    ix->slot[i].env = env;
}

/* The index of cfg's services and environments, or NULL when out of memory. */
static struct dq_config_index *index_build(const dq_config *cfg)
{
    size_t entries = cfg->n_services, slots = 16;
    for (size_t i = 0; i < cfg->n_services; i++)
        entries += cfg->services[i].n_envs;
    while (slots < 2 * entries)
        slots *= 2;
    struct dq_config_index *ix = calloc(1, sizeof *ix + slots * sizeof ix->slot[0]);
    if (ix == NULL)
        return NULL;
    ix->mask = slots - 1;
    for (size_t i = 0; i < cfg->n_services; i++) {
        const dq_service *svc = &cfg->services[i];
        if (svc->name == NULL)
            continue;
        index_add(ix, svc, NULL);
        for (size_t j = 0; j < svc->n_envs; j++)
            if (svc->envs[j].name != NULL)
                index_add(ix, svc, &svc->envs[j]);
    }
    return ix;
}

/* The environment of svc named name, or NULL. */
static const dq_environment *env_of(const dq_config *cfg, const dq_service *svc,
                                    const char *name)
{
    if (svc == NULL || name == NULL)
        return NULL;
    if (cfg->index != NULL) {
        const struct index_slot *s = index_find(cfg->index, svc, name);
        return s != NULL ? s->env : NULL;
    }
    for (size_t i = 0; i < svc->n_envs; i++)
        if (svc->envs[i].name != NULL && strcmp(svc->envs[i].name, name) == 0)
            return &svc->envs[i];
    return NULL;
}

/* ---- sections ---------------------------------------------------------------------- */

/* Each reader takes its section's item of the view; item->string is its key. */

static int read_kafka(loader *ld, const cJSON *section)
{
    const cJSON *map = NULL, *it;
    if (want_mapping(ld, section, "kafka", &map) < 0)
        return -1;
    cJSON_ArrayForEach(it, map)
    {
        char path[128];
        snprintf(path, sizeof path, "kafka.%.100s", it->string);
        const char *value = text_of(ld, it);
        if (value == NULL || cJSON_IsNull(it))
            return fail_item(ld, it, "%s: must be a scalar value", path);
        /* Keys are unique in a mapping: appended without looking for an earlier one. */
        if (kafka_add(ld->cfg, it->string, value) < 0)
            return fail_item(ld, it, "out of memory");
    }
    return 0;
}

static int read_redis(loader *ld, const cJSON *section)
{
    static const char *const known[] = {"url", "timeout", NULL};
    const cJSON *map = NULL, *it;
    if (want_mapping(ld, section, "redis", &map) < 0 || known_keys(ld, map, known, "redis") < 0)
        return -1;
    cJSON_ArrayForEach(it, map)
    {
        if (strcmp(it->string, "url") == 0) {
            const char *url = NULL;
            if (want_string(ld, it, "redis.url", &url) < 0)
                return -1;
            redact_url_password(url);
            if (set_str(&ld->cfg->redis_url, url) < 0)
                return fail_item(ld, it, "out of memory");
        } else { /* timeout */
            int64_t ms = 0;
            if (want_duration(ld, it, "redis.timeout", &ms) < 0)
                return -1;
            if (ms > INT32_MAX)
                return fail_item(ld, it, "redis.timeout: too long");
            ld->cfg->redis_timeout_ms = (int)ms;
        }
    }
    return 0;
}

static int read_validator(loader *ld, const cJSON *section)
{
    static const char *const known[] = {"max_request_bytes", "max_depth", "issued_at_window",
                                        NULL};
    const cJSON *map = NULL, *it;
    if (want_mapping(ld, section, "validator", &map) < 0 ||
        known_keys(ld, map, known, "validator") < 0)
        return -1;
    cJSON_ArrayForEach(it, map)
    {
        const char *k = it->string;
        long long n;
        if (strcmp(k, "max_request_bytes") == 0) {
            if (want_int(ld, it, "validator.max_request_bytes", 1024, 1048576, &n) < 0)
                return -1;
            ld->cfg->max_request_bytes = (size_t)n;
        } else if (strcmp(k, "max_depth") == 0) {
            if (want_int(ld, it, "validator.max_depth", 2, 64, &n) < 0)
                return -1;
            ld->cfg->max_depth = (int)n;
        } else { /* issued_at_window */
            if (want_duration(ld, it, "validator.issued_at_window",
                              &ld->cfg->issued_at_window_ms) < 0)
                return -1;
        }
    }
    return 0;
}

static int read_topics(loader *ld, const cJSON *section)
{
    static const char *const known[] = {"requests",    "events",
                                        "dead",        "group_prefix",
                                        "replication", "min_insync_replicas",
                                        NULL};
    const cJSON *map = NULL, *it, *isr_item = NULL;
    if (want_mapping(ld, section, "topics", &map) < 0 || known_keys(ld, map, known, "topics") < 0)
        return -1;
    cJSON_ArrayForEach(it, map)
    {
        const char *k = it->string;
        long long n;
        /* 32: more replicas than any cluster deployq would meet; Kafka's own limit is the
         * number of brokers, which only the broker knows (it refuses a larger factor) */
        if (strcmp(k, "replication") == 0 || strcmp(k, "min_insync_replicas") == 0) {
            int is_rf = strcmp(k, "replication") == 0;
            if (want_int(ld, it, is_rf ? "topics.replication" : "topics.min_insync_replicas", 1,
                         32, &n) < 0)
                return -1;
            if (is_rf) {
                ld->cfg->topic_replication = (int)n;
            } else {
                ld->cfg->topic_min_insync = (int)n;
                isr_item = it;
            }
            continue;
        }
        char **dst = strcmp(k, "requests") == 0 ? &ld->cfg->topic_requests
                     : strcmp(k, "events") == 0 ? &ld->cfg->topic_events
                     : strcmp(k, "dead") == 0   ? &ld->cfg->topic_dead
                                                : &ld->cfg->group_prefix;
        char path[64];
        snprintf(path, sizeof path, "topics.%s", k);
        const char *name = NULL;
        if (want_string(ld, it, path, &name) < 0)
            return -1;
        /* a group id has no length rule of its own; the worker adds "-executor-state" */
        if (!valid_topic(name) || (dst == &ld->cfg->group_prefix && strlen(name) > 200))
            return fail_item(ld, it,
                             "%s: a %s is 1 to %d of letters, digits, '.', '_', '-'", path,
                             dst == &ld->cfg->group_prefix ? "group prefix" : "topic name",
                             dst == &ld->cfg->group_prefix ? 200 : 249);
        if (set_str(dst, name) < 0)
            return fail_item(ld, it, "out of memory");
    }
    /* a topic whose min ISR exceeds its replicas refuses every acks=all write */
    if (isr_item && ld->cfg->topic_replication > 0 &&
        ld->cfg->topic_min_insync > ld->cfg->topic_replication)
        return fail_item(ld, isr_item,
                         "topics.min_insync_replicas: %d is above topics.replication (%d): "
                         "every write would be refused",
                         ld->cfg->topic_min_insync, ld->cfg->topic_replication);
    return 0;
}

static int read_schemas_dir(loader *ld, const cJSON *item)
{
    const char *dir = NULL;
    if (want_string(ld, item, "schemas_dir", &dir) < 0)
        return -1;
    if (dir[0] == '\0')
        return fail_item(ld, item, "schemas_dir: must not be empty");
    if (dir[0] == '/' || ld->dir == NULL) {
        if (set_str(&ld->cfg->schemas_dir, dir) < 0)
            return fail_item(ld, item, "out of memory");
        return 0;
    }
    /* Relative to the file, so the config works from any working directory. */
    size_t n = strlen(ld->dir) + 1 + strlen(dir) + 1;
    char *joined = malloc(n);
    if (joined == NULL)
        return fail_item(ld, item, "out of memory");
    snprintf(joined, n, "%s/%s", ld->dir, dir);
    free(ld->cfg->schemas_dir);
    ld->cfg->schemas_dir = joined;
    return 0;
}

/* keys[i].services or .environments: a non-empty sequence of names, into *out (n). Whether
 * the names are configured is checked once services: is read (check_key_scopes). */
static int read_scope(loader *ld, const cJSON *seq, const char *path, char ***out, size_t *n)
{
    const cJSON *it;
    int count;

    if (!cJSON_IsArray(seq))
        return fail_item(ld, seq, "%s: must be a list of names, e.g. [api, web]", path);
    count = cJSON_GetArraySize(seq);
    if (count <= 0)
        return fail_item(ld, seq, "%s: must name at least one; leave it out for all", path);
    *out = calloc((size_t)count, sizeof **out);
    if (*out == NULL)
        return fail_item(ld, seq, "out of memory");
    cJSON_ArrayForEach(it, seq)
    {
        const char *s = cJSON_IsString(it) ? text_of(ld, it) : NULL;

        if (s == NULL || !valid_name(s))
            return fail_item(ld, it, "%s: entry %zu: a name must match ^[a-z0-9][a-z0-9._-]{0,62}$",
                             path, *n + 1);
        for (size_t j = 0; j < *n; j++)
            if (strcmp((*out)[j], s) == 0)
                return fail_item(ld, it, "%s: '%s' is listed twice", path, s);
        if (set_str(&(*out)[*n], s) < 0)
            return fail_item(ld, it, "out of memory");
        (*n)++;
    }
    return 0;
}

/* ids: the ids of the keys before this one, to refuse a duplicate. */
static int read_key(loader *ld, table *ids, const cJSON *entry, size_t index, dq_key *key)
{
    static const char *const known[] = {"id",      "public_key", "role", "retired",
                                        "services", "environments", NULL};
    char path[64];
    snprintf(path, sizeof path, "keys[%zu]", index);
    if (!cJSON_IsObject(entry))
        return fail_item(ld, entry, "%s: must be a mapping with id and public_key", path);
    if (known_keys(ld, entry, known, path) < 0)
        return -1;

    int has_id = 0, has_key = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, entry)
    {
        const char *k = it->string;
        char kpath[160];
        snprintf(kpath, sizeof kpath, "%s.%.64s", path, k);
        const char *s = NULL;
        if (strcmp(k, "id") == 0) {
            if (want_string(ld, it, kpath, &s) < 0)
                return -1;
            if (s[0] == '\0')
                return fail_item(ld, it, "%s: must not be empty", kpath);
            if (table_find(ids, s, strlen(s)) != NULL)
                return fail_item(ld, it, "%s: duplicate key id '%.64s'", kpath, s);
            if (set_str(&key->id, s) < 0 || table_put(ids, key->id, strlen(key->id), key) < 0)
                return fail_item(ld, it, "out of memory");
            has_id = 1;
        } else if (strcmp(k, "public_key") == 0) {
            unsigned char raw[KEY_BYTES];
            if (want_string(ld, it, kpath, &s) < 0)
                return -1;
            if (dq_base64_decode(s, raw, sizeof raw) != KEY_BYTES)
                return fail_item(ld, it,
                                 "%s: must be the base64 of a 32-byte Ed25519 public key", kpath);
            if (set_str(&key->public_key, s) < 0)
                return fail_item(ld, it, "out of memory");
            has_key = 1;
        } else if (strcmp(k, "role") == 0) {
            if (want_string(ld, it, kpath, &s) < 0)
                return -1;
            if (strcmp(s, "ci") != 0 && strcmp(s, "approver") != 0 && strcmp(s, "operator") != 0)
                return fail_item(ld, it, "%s: must be 'ci', 'approver' or 'operator'", kpath);
            if (set_str(&key->role, s) < 0)
                return fail_item(ld, it, "out of memory");
        } else if (strcmp(k, "services") == 0) {
            if (read_scope(ld, it, kpath, &key->services, &key->n_services) < 0)
                return -1;
        } else if (strcmp(k, "environments") == 0) {
            if (read_scope(ld, it, kpath, &key->environments, &key->n_environments) < 0)
                return -1;
        } else { /* retired */
            if (want_bool(ld, it, kpath, &key->retired) < 0)
                return -1;
        }
    }
    if (!has_id)
        return fail_item(ld, entry, "%s: id is missing", path);
    if (!has_key)
        return fail_item(ld, entry, "%s.public_key is missing (key '%.64s')", path, key->id);
    if (key->role == NULL && set_str(&key->role, "ci") < 0)
        return fail_item(ld, entry, "out of memory");
    /* A CI key's requests name their own target; a scope would only look like a limit. */
    if ((key->services || key->environments) && strcmp(key->role, "ci") == 0) {
        const cJSON *at = dq_json_get(entry, key->services ? "services" : "environments");
        return fail_key(ld, at, "%s.%s: only an approver or operator key has a scope (key '%.64s' has role ci)",
                        path, key->services ? "services" : "environments", key->id);
    }
    return 0;
}

/* Once keys: and services: are both read: every name in a key's scope is configured, so a
 * typo cannot leave an approver unable to approve anything (or quietly narrower). An
 * environment must be one of the scoped services' (of any service without services:). */
static int check_key_scopes(loader *ld, const cJSON *seq)
{
    const cJSON *entry = cJSON_IsArray(seq) ? seq->child : NULL;

    for (size_t i = 0; i < ld->cfg->n_keys && entry != NULL; i++, entry = entry->next) {
        const dq_key *key = &ld->cfg->keys[i];
        const cJSON *list = dq_json_get(entry, "services"), *it;
        size_t j = 0;

        for (it = list ? list->child : NULL; it != NULL; it = it->next, j++)
            if (!dq_config_service(ld->cfg, key->services[j]))
                return fail_item(ld, it, "keys[%zu].services: '%s' is not a service of services:", i,
                                 key->services[j]);
        list = dq_json_get(entry, "environments");
        j = 0;
        for (it = list ? list->child : NULL; it != NULL; it = it->next, j++) {
            int found = 0;

            for (size_t s = 0; s < ld->cfg->n_services && !found; s++)
                found = dq_key_in_scope(key, ld->cfg->services[s].name, key->environments[j]) &&
                        dq_config_environment(ld->cfg, ld->cfg->services[s].name, key->environments[j]);
            if (!found)
                return fail_item(ld, it, "keys[%zu].environments: '%s' is not an environment of %s", i,
                                 key->environments[j], key->n_services ? "the key's services" : "any service");
        }
    }
    return 0;
}

static int read_keys(loader *ld, const cJSON *seq)
{
    if (cJSON_IsNull(seq))
        return 0;
    if (!cJSON_IsArray(seq))
        return fail_item(ld, seq, "keys: must be a sequence of {id, public_key, role}");
    int count = cJSON_GetArraySize(seq);
    if (count <= 0)
        return 0;
    ld->cfg->keys = calloc((size_t)count, sizeof *ld->cfg->keys);
    if (ld->cfg->keys == NULL)
        return fail_item(ld, seq, "out of memory");

    table ids = {0};
    const cJSON *entry;
    int rc = 0;
    for (entry = seq->child; rc == 0 && entry != NULL; entry = entry->next) {
        /* Counted before reading, so a failed entry is still freed with the config. */
        dq_key *key = &ld->cfg->keys[ld->cfg->n_keys];
        rc = read_key(ld, &ids, entry, ld->cfg->n_keys, key);
        ld->cfg->n_keys++;
    }
    table_free(&ids);
    return rc;
}

static int read_environment(loader *ld, const char *service, const cJSON *map,
                            dq_environment *env)
{
    const char *name = map->string;
    char path[256];
    snprintf(path, sizeof path, "services.%s.environments.%.64s", service, name);
    if (!valid_name(name))
        return fail_key(ld, map,
                        "%s: an environment name must match ^[a-z0-9][a-z0-9._-]{0,62}$", path);
    if (set_str(&env->name, name) < 0)
        return fail_item(ld, map, "out of memory");

    if (cJSON_IsNull(map))
        return 0;
    if (!cJSON_IsObject(map))
        return fail_item(ld, map, "%s: must be a mapping (or {} when empty)", path);
    env->view = map;

    const cJSON *item;
    cJSON_ArrayForEach(item, map)
    {
        const char *k = item->string;
        const char *s = NULL;
        char kpath[336];
        snprintf(kpath, sizeof kpath, "%s.%.64s", path, k);
        if (strcmp(k, "requires") == 0) {
            if (want_string(ld, item, kpath, &s) < 0)
                return -1;
            if (set_str(&env->requires, s) < 0)
                return fail_item(ld, item, "out of memory");
        } else if (strcmp(k, "approval") == 0) {
            s = text_of(ld, item);
            if (s != NULL && strcmp(s, "required") == 0)
                env->approval = 1;
            else if (s != NULL && strcmp(s, "none") == 0)
                env->approval = 0;
            else
                return fail_item(ld, item, "%s: approval must be 'required' or 'none'", path);
        }
        /* Any other key belongs to a later worker (providers, probes, ...): in env->view. */
    }
    return 0;
}

/* Every `requires` names a sibling environment, and following them never loops. Linear in
 * the environments: each points at most at one other, so the loops are found in one pass. */
static int check_requires(loader *ld, const dq_service *svc)
{
    size_t n = svc->n_envs;
    if (n == 0)
        return 0;
    size_t *to = malloc(n * sizeof *to); /* what envs[i] requires: an index, or n for none */
    unsigned char *state = calloc(n, 1); /* 1 on the path being followed, 2 done, 3 on a loop */
    if (to == NULL || state == NULL) {
        free(to);
        free(state);
        return fail_item(ld, svc->view, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        const dq_environment *t = env_of(ld->cfg, svc, svc->envs[i].requires);
        to[i] = t != NULL ? (size_t)(t - svc->envs) : n;
    }
    for (size_t i = 0; i < n; i++) {
        size_t j = i;
        while (j < n && state[j] == 0) {
            state[j] = 1;
            j = to[j];
        }
        if (j < n && state[j] == 1) /* back on this path: j is on a loop */
            for (size_t k = j; state[k] == 1; k = to[k])
                state[k] = 3;
        for (size_t k = i; k < n && state[k] == 1; k = to[k])
            state[k] = 2;
    }

    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const dq_environment *env = &svc->envs[i];
        if (env->requires == NULL)
            continue;
        const cJSON *where = dq_json_get(env->view, "requires");
        if (strcmp(env->requires, env->name) == 0)
            rc = fail_item(ld, where, "services.%s.environments.%s: requires names itself",
                           svc->name, env->name);
        else if (to[i] == n)
            rc = fail_item(ld, where,
                           "services.%s.environments.%s: requires '%.64s', which is not an "
                           "environment of service %s",
                           svc->name, env->name, env->requires, svc->name);
        else if (state[i] == 3) /* a loop that does not pass through env is reported at one
                                   of its own members */
            rc = fail_item(ld, where,
                           "services.%s.environments.%s: requires forms a cycle, so no deploy "
                           "could ever pass it",
                           svc->name, env->name);
    }
    free(to);
    free(state);
    return rc;
}

static int read_service(loader *ld, const cJSON *map, dq_service *svc)
{
    static const char *const known[] = {"environments", "github_deployments", "checks", "sentry", NULL};
    const char *name = map->string;
    if (!valid_name(name))
        return fail_key(ld, map,
                        "services.%.64s: a service name must match ^[a-z0-9][a-z0-9._-]{0,62}$",
                        name);
    if (set_str(&svc->name, name) < 0)
        return fail_item(ld, map, "out of memory");
    char path[128];
    snprintf(path, sizeof path, "services.%s", name);

    if (cJSON_IsNull(map))
        return 0;
    if (!cJSON_IsObject(map))
        return fail_item(ld, map, "%s: must be a mapping with environments", path);
    svc->view = map;
    if (known_keys(ld, map, known, path) < 0)
        return -1;

    const cJSON *item = dq_json_get(map, "environments"), *envs = NULL, *e;
    if (item == NULL)
        return 0;
    char epath[160];
    snprintf(epath, sizeof epath, "%s.environments", path);
    if (want_mapping(ld, item, epath, &envs) < 0)
        return -1;
    int count = envs != NULL ? cJSON_GetArraySize(envs) : 0;
    if (count <= 0)
        return 0;
    svc->envs = calloc((size_t)count, sizeof *svc->envs);
    if (svc->envs == NULL)
        return fail_item(ld, envs, "out of memory");
    cJSON_ArrayForEach(e, envs)
    {
        dq_environment *env = &svc->envs[svc->n_envs++];
        if (read_environment(ld, name, e, env) < 0)
            return -1;
    }
    return 0;
}

static int read_services(loader *ld, const cJSON *section)
{
    const cJSON *map = NULL, *it;
    if (want_mapping(ld, section, "services", &map) < 0)
        return -1;
    int count = map != NULL ? cJSON_GetArraySize(map) : 0;
    if (count <= 0)
        return 0;
    ld->cfg->services = calloc((size_t)count, sizeof *ld->cfg->services);
    if (ld->cfg->services == NULL)
        return fail_item(ld, map, "out of memory");

    cJSON_ArrayForEach(it, map)
    {
        dq_service *svc = &ld->cfg->services[ld->cfg->n_services++];
        if (read_service(ld, it, svc) < 0)
            return -1;
    }
    ld->cfg->index = index_build(ld->cfg);
    if (ld->cfg->index == NULL)
        return fail_item(ld, map, "out of memory");
    for (size_t i = 0; i < ld->cfg->n_services; i++)
        if (check_requires(ld, &ld->cfg->services[i]) < 0)
            return -1;
    return 0;
}

static int read_root(loader *ld, const cJSON *root)
{
    if (root == NULL || cJSON_IsNull(root))
        return 0;
    if (!cJSON_IsObject(root))
        return fail_item(ld, root, "the file must be a mapping of sections (kafka, redis, ...)");
    if (known_keys(ld, root, top_level_keys, NULL) < 0)
        return -1;

    const cJSON *it;
    cJSON_ArrayForEach(it, root)
    {
        const char *k = it->string;
        int rc = 0;
        if (strcmp(k, "kafka") == 0)
            rc = read_kafka(ld, it);
        else if (strcmp(k, "redis") == 0)
            rc = read_redis(ld, it);
        else if (strcmp(k, "validator") == 0)
            rc = read_validator(ld, it);
        else if (strcmp(k, "topics") == 0)
            rc = read_topics(ld, it);
        else if (strcmp(k, "schemas_dir") == 0)
            rc = read_schemas_dir(ld, it);
        else if (strcmp(k, "keys") == 0)
            rc = read_keys(ld, it);
        else if (strcmp(k, "services") == 0)
            rc = read_services(ld, it);
        /* the other top-level keys are sections later workers read from the view */
        if (rc < 0)
            return -1;
    }
    return check_key_scopes(ld, dq_json_get(root, "keys"));
}

/* ---- keys and aliases ------------------------------------------------------------- */

/*
 * The document comes from libfyaml unresolved, with duplicate keys allowed (libfyaml's own
 * checks are quadratic). One walk in document order, linear in the file plus what aliases
 * add, checks:
 *  - keys: a plain value, not an alias, a mapping or a sequence, and no two alike in one
 *    mapping (compared by text, as libfyaml does);
 *  - aliases: each names an anchor written before it (the last one, when a name is used
 *    twice), never one that contains it, and all of them together expand to at most
 *    ALIAS_NODES_MAX nodes, nested at most NESTING_MAX deep. The walk follows each alias
 *    through what it names and stops at the first node over a limit, so a bomb costs
 *    ALIAS_NODES_MAX steps, not what it would expand to;
 *  - merge keys (<<): the value is an alias of a mapping, or a list of them.
 * Only then are aliases replaced by copies and merge keys merged (expand_node()).
 */
typedef struct alias_walk {
    loader *ld;
    struct fy_document *doc;
    table anchor_of; /* anchored node -> its struct fy_anchor */
    table named;     /* anchor name -> the node it names at this point of the document */
    table target;    /* alias node -> the node it names */
    size_t added;    /* nodes the aliases expanded to so far */
    struct fy_node *alias; /* the alias being followed, outermost, for the message */
} alias_walk;

/* The text of a key or alias as libfyaml holds it ("" for an empty key). */
static const char *raw_text(struct fy_node *node, size_t *len)
{
    const char *s = node != NULL ? fy_node_get_scalar(node, len) : NULL;
    if (s == NULL) {
        *len = 0;
        return "";
    }
    return s;
}

static int is_merge_key(struct fy_node_pair *pair)
{
    struct fy_node *k = fy_node_pair_key(pair);
    size_t len;
    const char *s = raw_text(k, &len);
    return k != NULL && fy_node_get_type(k) == FYNT_SCALAR && !fy_node_is_alias(k) &&
           fy_node_get_style(k) == FYNS_PLAIN && len == 2 && memcmp(s, "<<", 2) == 0;
}

/* Keys are plain values, each once per mapping. */
static int check_keys(loader *ld, struct fy_node *map)
{
    table seen = {0};
    void *it = NULL;
    struct fy_node_pair *pair;
    int rc = 0;

    while (rc == 0 && (pair = fy_node_mapping_iterate(map, &it)) != NULL) {
        struct fy_node *k = fy_node_pair_key(pair);
        size_t len;
        const char *text = raw_text(k, &len);
        if (k != NULL && fy_node_is_alias(k))
            rc = fail_at(ld, k, "an alias (*%.*s) cannot be a mapping key",
                         (int)(len > 64 ? 64 : len), text);
        else if (k != NULL && fy_node_get_type(k) != FYNT_SCALAR)
            rc = fail_at(ld, k, "a mapping key must be a plain value, not a mapping or a list");
        else if (table_find(&seen, text, len) != NULL)
            rc = fail_at(ld, k != NULL ? k : at(pair), "duplicate key");
        else if (table_put(&seen, text, len, pair) < 0)
            rc = fail_at(ld, map, "out of memory");
    }
    table_free(&seen);
    return rc;
}

static int fail_walk(alias_walk *aw, struct fy_node *node, const char *fmt, ...)
    DQ_PRINTF(3, 4);

/* An error at the alias being followed ("alias *name: ..."), else at node. */
static int fail_walk(alias_walk *aw, struct fy_node *node, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (aw->alias == NULL)
        return fail_at(aw->ld, node, "%s", msg);
    size_t len;
    const char *name = raw_text(aw->alias, &len);
    return fail_at(aw->ld, aw->alias, "alias *%.*s: %s", (int)(len > 64 ? 64 : len), name, msg);
}

/* The node an alias names, as of the alias's place in the document. */
static struct fy_node *name_alias(alias_walk *aw, struct fy_node *alias)
{
    size_t len;
    const char *name = raw_text(alias, &len);
    int shown = (int)(len > 64 ? 64 : len);
    struct fy_node *to = table_get(&aw->named, name, len);

    if (to == NULL) {
        fail_at(aw->ld, alias, "alias *%.*s: no anchor &%.*s before it", shown, name, shown,
                name);
        return NULL;
    }
    for (struct fy_node *up = fy_node_get_parent(alias); up != NULL; up = fy_node_get_parent(up))
        if (up == to) {
            fail_at(aw->ld, alias, "alias *%.*s is inside the node it names", shown, name);
            return NULL;
        }
    if (table_put(&aw->target, alias, PTR_KEY, to) < 0) {
        fail_at(aw->ld, alias, "out of memory");
        return NULL;
    }
    return to;
}

/* A merge key's value names mappings: one alias, or a list of aliases. Neither the key nor
 * the value may carry an anchor: the pair is gone once merged. */
static int check_merge(alias_walk *aw, struct fy_node_pair *pair)
{
    struct fy_node *v = fy_node_pair_value(pair);
    void *it = NULL;
    struct fy_node *item = v;
    int ok = v != NULL && (fy_node_is_alias(v) || is_sequence(v)) &&
             table_get(&aw->anchor_of, v, PTR_KEY) == NULL &&
             table_get(&aw->anchor_of, fy_node_pair_key(pair), PTR_KEY) == NULL;

    if (ok && is_sequence(v))
        item = fy_node_sequence_iterate(v, &it);
    while (ok && item != NULL) {
        ok = fy_node_is_alias(item) && is_mapping(table_get(&aw->target, item, PTR_KEY));
        item = is_sequence(v) ? fy_node_sequence_iterate(v, &it) : NULL;
    }
    if (!ok)
        return fail_at(aw->ld, at(pair),
                       "<<: a merge key takes an alias of a mapping (<<: *name) or a list of "
                       "them");
    return 0;
}

/* depth: 1 for the root. expanding: node is reached through an alias (counted, and its
 * keys and anchors were checked when the walk first passed it). */
static int walk(alias_walk *aw, struct fy_node *node, int depth, int expanding)
{
    if (node == NULL)
        return 0;
    if (expanding && ++aw->added > ALIAS_NODES_MAX)
        return fail_walk(aw, node, "expanding aliases would make more than %d nodes",
                         ALIAS_NODES_MAX);
    if (depth > NESTING_MAX)
        return fail_walk(aw, node, "nested more than %d levels deep once expanded",
                         NESTING_MAX);
    if (!expanding) {
        struct fy_anchor *a = table_get(&aw->anchor_of, node, PTR_KEY);
        size_t len = 0;
        const char *name = a != NULL ? fy_anchor_get_text(a, &len) : NULL;
        /* Named before its content is walked: an alias inside names this node (a loop). */
        if (name != NULL && table_put(&aw->named, name, len, node) < 0)
            return fail_at(aw->ld, node, "out of memory");
    }
    if (fy_node_is_alias(node)) {
        struct fy_node *to =
            expanding ? table_get(&aw->target, node, PTR_KEY) : name_alias(aw, node);
        if (to == NULL)
            return -1;
        struct fy_node *outer = aw->alias;
        if (outer == NULL)
            aw->alias = node;
        int rc = walk(aw, to, depth, 1);
        aw->alias = outer;
        return rc;
    }
    void *it = NULL;
    if (is_sequence(node)) {
        struct fy_node *item;
        while ((item = fy_node_sequence_iterate(node, &it)) != NULL)
            if (walk(aw, item, depth + 1, expanding) < 0)
                return -1;
    } else if (is_mapping(node)) {
        struct fy_node_pair *pair;
        if (!expanding && check_keys(aw->ld, node) < 0)
            return -1;
        while ((pair = fy_node_mapping_iterate(node, &it)) != NULL) {
            if (walk(aw, fy_node_pair_key(pair), depth + 1, expanding) < 0 ||
                walk(aw, fy_node_pair_value(pair), depth + 1, expanding) < 0)
                return -1;
            if (!expanding && is_merge_key(pair) && check_merge(aw, pair) < 0)
                return -1;
        }
    }
    return 0;
}

/* A mapping or sequence copied in for an alias has no parent: remember the alias's line. */
static int mark_line(loader *ld, struct fy_node *copy, int line)
{
    if (copy == NULL || fy_node_get_type(copy) == FYNT_SCALAR || line <= 0)
        return 0;
    node_meta *m = malloc(sizeof *m + 1);
    if (m == NULL)
        return fail_at(ld, copy, "out of memory");
    m->from_env = 0;
    m->line = line;
    m->text[0] = '\0';
    if (fy_node_set_meta(copy, m) != 0) {
        free(m);
        return fail_at(ld, copy, "out of memory");
    }
    return 0;
}

/* Add the pairs of src whose keys map has not got yet (explicit keys win; among merged
 * mappings the first wins, as YAML's merge key says), at the end of map. */
static int merge_from(alias_walk *aw, struct fy_node *map, table *have, struct fy_node *src)
{
    void *it = NULL;
    struct fy_node_pair *pair;
    while ((pair = fy_node_mapping_iterate(src, &it)) != NULL) {
        size_t len;
        const char *text = raw_text(fy_node_pair_key(pair), &len);
        if (table_find(have, text, len) != NULL)
            continue;
        struct fy_node *k = fy_node_copy(aw->doc, fy_node_pair_key(pair));
        struct fy_node *v = fy_node_copy(aw->doc, fy_node_pair_value(pair));
        if (k == NULL || v == NULL || table_put(have, text, len, pair) < 0 ||
            fy_node_mapping_append(map, k, v) != 0) {
            fy_node_free(k);
            fy_node_free(v);
            return fail_at(aw->ld, map, "out of memory");
        }
    }
    return 0;
}

static int merge_into(alias_walk *aw, struct fy_node *map, struct fy_node_pair *merge)
{
    table have = {0};
    void *it = NULL;
    struct fy_node_pair *pair;
    struct fy_node *v = fy_node_pair_value(merge), *item;
    int rc = 0;

    while (rc == 0 && (pair = fy_node_mapping_iterate(map, &it)) != NULL) {
        size_t len;
        const char *text = raw_text(fy_node_pair_key(pair), &len);
        if (pair != merge && table_put(&have, text, len, pair) < 0)
            rc = fail_at(aw->ld, map, "out of memory");
    }
    if (rc == 0 && fy_node_is_alias(v))
        rc = merge_from(aw, map, &have, table_get(&aw->target, v, PTR_KEY));
    it = NULL;
    while (rc == 0 && is_sequence(v) && (item = fy_node_sequence_iterate(v, &it)) != NULL)
        rc = merge_from(aw, map, &have, table_get(&aw->target, item, PTR_KEY));
    table_free(&have);
    if (rc < 0)
        return -1;
    /* The << pair is the only key "<<" (keys are unique), so it is found and freed. */
    struct fy_node *gone = fy_node_mapping_remove_by_key(map, fy_node_pair_key(merge));
    if (gone == NULL)
        return fail_at(aw->ld, map, "<<: could not remove the merge key");
    fy_node_free(gone);
    return 0;
}

/* Replace every alias below node by a copy of what it names, and merge the merge keys, in
 * document order: what an alias names comes before it, so it is expanded already. */
static int expand_node(alias_walk *aw, struct fy_node *node)
{
    void *it = NULL;
    if (is_sequence(node)) {
        struct fy_node *item = fy_node_sequence_iterate(node, &it);
        while (item != NULL) {
            struct fy_node *next = fy_node_sequence_iterate(node, &it);
            if (!fy_node_is_alias(item)) {
                if (expand_node(aw, item) < 0)
                    return -1;
            } else {
                int line = node_line(item);
                /* In place of the item, in constant time (the alias is freed). */
                if (fy_node_insert(item, table_get(&aw->target, item, PTR_KEY)) != 0)
                    return fail_at(aw->ld, node, "out of memory");
                void *back = next;
                if (mark_line(aw->ld, fy_node_sequence_reverse_iterate(node, &back), line) < 0)
                    return -1;
            }
            item = next;
        }
    } else if (is_mapping(node)) {
        struct fy_node_pair *pair, *merge = NULL;
        while ((pair = fy_node_mapping_iterate(node, &it)) != NULL) {
            struct fy_node *v = fy_node_pair_value(pair);
            if (is_merge_key(pair)) {
                merge = pair;
            } else if (!fy_node_is_alias(v)) {
                if (expand_node(aw, v) < 0)
                    return -1;
            } else {
                int line = node_line(v);
                struct fy_node *copy =
                    fy_node_copy(aw->doc, table_get(&aw->target, v, PTR_KEY));
                if (copy == NULL || fy_node_pair_set_value(pair, copy) != 0) {
                    fy_node_free(copy);
                    return fail_at(aw->ld, node, "out of memory");
                }
                if (mark_line(aw->ld, copy, line) < 0)
                    return -1;
            }
        }
        if (merge != NULL && merge_into(aw, node, merge) < 0)
            return -1;
    }
    return 0;
}

/* Check keys and aliases (the limits above), then expand aliases and merge keys. */
static int expand_aliases(loader *ld, struct fy_document *doc)
{
    alias_walk aw = {.ld = ld, .doc = doc};
    void *it = NULL;
    struct fy_anchor *a;
    int rc = -1;

    for (size_t n = 1; (a = fy_document_anchor_iterate(doc, &it)) != NULL; n++) {
        size_t len = 0;
        const char *name = fy_anchor_get_text(a, &len);
        if (n > ANCHORS_MAX) {
            fail_at(ld, fy_anchor_node(a), "anchor &%.*s: more than %d anchors in one file",
                    (int)(len > 64 ? 64 : len), name != NULL ? name : "", ANCHORS_MAX);
            goto done;
        }
        if (table_put(&aw.anchor_of, fy_anchor_node(a), PTR_KEY, a) < 0) {
            fail_at(ld, NULL, "out of memory");
            goto done;
        }
    }
    if (walk(&aw, fy_document_root(doc), 1, 0) < 0)
        goto done;
    if (aw.target.n > 0 && expand_node(&aw, fy_document_root(doc)) < 0)
        goto done;
    rc = 0;
done:
    table_free(&aw.anchor_of);
    table_free(&aw.named);
    table_free(&aw.target);
    return rc;
}

/* ---- parsing ----------------------------------------------------------------------- */

static void diag_discard(struct fy_diag *diag, void *user, const char *text, size_t len)
{
    /* Errors are collected and reported through the caller's buffer, never printed. */
}

/* Report the first error libfyaml collected, if any. 1 when there was one. */
static int syntax_error(loader *ld, struct fy_diag *diag)
{
    void *it = NULL;
    struct fy_diag_error *e;
    while ((e = fy_diag_errors_iterate(diag, &it)) != NULL) {
        if (e->type < FYET_ERROR)
            continue;
        const char *msg = e->msg != NULL ? e->msg : "YAML syntax error";
        if (ld->err != NULL && ld->errlen > 0) {
            /* libfyaml's collected lines are already 1-based. */
            if (e->line > 0)
                snprintf(ld->err, ld->errlen, "%s:%d: %s", ld->name, e->line, msg);
            else
                snprintf(ld->err, ld->errlen, "%s: %s", ld->name, msg);
        }
        return 1;
    }
    return 0;
}

/* The parser gave up without saying why: never read as "no configuration". */
static void no_reason(loader *ld)
{
    fail_at(ld, NULL,
            "the YAML could not be loaded and libfyaml gave no reason (out of memory?)");
}

/* 1 when text holds no YAML node: only blank lines, comments and document markers (---,
 * ...), so that the file means "all defaults". */
static int is_blank(const char *text, size_t len)
{
    size_t i = 0;
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
        i = 3; /* a byte order mark */
    while (i < len) {
        size_t eol = i;
        while (eol < len && text[eol] != '\n')
            eol++;
        size_t p = i;
        if (eol - i >= 3 && (memcmp(text + i, "---", 3) == 0 || memcmp(text + i, "...", 3) == 0))
            p += 3;
        while (p < eol && (text[p] == ' ' || text[p] == '\t' || text[p] == '\r'))
            p++;
        if (p < eol && text[p] != '#')
            return 0;
        if (p == i + 3 && p < eol && text[p] == '#')
            return 0; /* "---#x" is not a marker followed by a comment */
        i = eol + 1;
    }
    return 1;
}

/* Offset of the first byte of text[len] that is not part of well-formed UTF-8 (RFC 3629:
 * no overlong forms, no surrogates, nothing above U+10FFFF), or len. */
static size_t utf8_invalid_at(const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;

    while (i < len) {
        unsigned char c = s[i];
        size_t n;
        unsigned char lo = 0x80, hi = 0xbf; /* the range of the second byte */

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            n = 1;
        else if (c >= 0xe0 && c <= 0xef)
            n = 2, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        else if (c >= 0xf0 && c <= 0xf4)
            n = 3, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        else
            return i;
        if (len - i <= n || s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k <= n; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                return i;
        i += n + 1;
    }
    return len;
}

/*
 * Parse a file (path) or a malloc'd text (ownership passes to parse, then libfyaml); a file
 * is read into memory first. Text that is not UTF-8 is refused. Text with no YAML node in
 * it (empty, only comments) gives NULL with *empty set; any other NULL is an error, with the
 * reason in ld. The parser is driven by hand, not through fy_document_build_from_file(),
 * because that stops after the first document: a stray "---" would silently drop the rest
 * of the configuration.
 */
static struct fy_document *parse(loader *ld, const char *path, char *text, size_t len, int *empty)
{
    struct fy_diag *diag = NULL;
    struct fy_parser *fyp = NULL;
    struct fy_document *doc = NULL, *extra = NULL;

    *empty = 0;
    /* libfyaml 0.7 never returns from a directive ("%" starting a line) followed by a byte
     * that is not UTF-8 (found by tests/fuzz). A YAML stream is Unicode text anyway: refuse
     * anything else before the parser sees it, which means reading a file here. */
    if (path != NULL) {
        text = dq_read_file(path, CONFIG_MAX_BYTES, &len);
        if (text == NULL) {
            fail_at(ld, NULL, "cannot read: %s", strerror(errno));
            return NULL;
        }
        path = NULL;
    }
    size_t bad = utf8_invalid_at(text, len);
    if (bad < len) {
        int line = 1;
        for (size_t i = 0; i < bad; i++)
            line += text[i] == '\n';
        if (ld->err != NULL && ld->errlen > 0)
            snprintf(ld->err, ld->errlen, "%s:%d: not UTF-8 text (byte %zu)", ld->name, line,
                     bad);
        free(text);
        return NULL;
    }
    struct fy_diag_cfg dcfg;
    fy_diag_cfg_default(&dcfg);
    dcfg.fp = NULL;
    dcfg.output_fn = diag_discard;
    dcfg.colorize = false;
    diag = fy_diag_create(&dcfg);
    if (diag == NULL)
        goto oom;
    fy_diag_set_collect_errors(diag, true);

    /* Decided from the text, while this module still holds it: libfyaml returns no
     * document for an empty stream, but also, without a word, when it runs out of memory. */
    int blank = is_blank(text, len);

    /* Neither resolved nor checked for duplicate keys by libfyaml: both are quadratic there
     * (and the resolution unbounded); expand_aliases() does them. */
    struct fy_parse_cfg pcfg = {
        .flags = FYPCF_QUIET | FYPCF_JSON_NONE | FYPCF_ALLOW_DUPLICATE_KEYS,
        .diag = diag,
    };
    fyp = fy_parser_create(&pcfg);
    if (fyp == NULL)
        goto oom;
    if (fy_parser_set_malloc_string(fyp, text, len) != 0)
        goto oom;
    text = NULL; /* now owned by the parser */

    doc = fy_parse_load_document(fyp);
    if (doc == NULL) {
        if (syntax_error(ld, diag))
            goto done;
        if (blank)
            *empty = 1;
        else
            no_reason(ld);
        goto done;
    }
    extra = fy_parse_load_document(fyp);
    if (extra == NULL && syntax_error(ld, diag))
        goto fail;
    if (extra == NULL && fy_parser_get_stream_error(fyp)) {
        no_reason(ld);
        goto fail;
    }
    /* A trailing "---" with nothing after it is harmless; a second document is not. */
    struct fy_node *extra_root = extra != NULL ? fy_document_root(extra) : NULL;
    if (extra_root != NULL && (fy_node_get_type(extra_root) != FYNT_SCALAR ||
                               fy_node_get_scalar_token(extra_root) != NULL)) {
        fail_at(ld, extra_root,
                "a second YAML document starts here; the configuration is one document");
        goto fail;
    }
    goto done;

oom:
    fail_at(ld, NULL, "out of memory");
fail:
    fy_document_destroy(doc);
    doc = NULL;
done:
    if (extra != NULL)
        fy_parse_document_destroy(fyp, extra);
    fy_parser_destroy(fyp);
    fy_diag_destroy(diag);
    free(text);
    return doc;
}

static int view_build(loader *ld, struct fy_node *root);
static void tree_free(struct dq_config_tree *t);

/* The passes over a parsed document (see the top of this file); frees the document. */
static dq_config *load_doc(loader *ld, struct fy_document *doc)
{
    dq_config *cfg = dq_config_new_default();
    if (cfg == NULL) {
        fy_document_destroy(doc);
        fail_at(ld, NULL, "out of memory");
        return NULL;
    }
    ld->cfg = cfg;
    ld->doc = doc;
    if (ld->path != NULL && set_str(&cfg->path, ld->path) < 0) {
        fail_at(ld, NULL, "out of memory");
        goto fail;
    }
    if (doc != NULL) {
        if (fy_document_register_meta(doc, meta_clear, NULL) != 0) {
            fail_at(ld, NULL, "libfyaml refused the meta data hook");
            goto fail;
        }
        if (expand_aliases(ld, doc) < 0 || resolve_tree(ld, fy_document_root(doc), 0, 1) < 0 ||
            view_build(ld, fy_document_root(doc)) < 0)
            goto fail;
        /* Everything the readers and the workers need is in the view now. */
        fy_document_destroy(doc);
        ld->doc = doc = NULL;
        if (read_root(ld, cfg->tree->root) < 0)
            goto fail;
    }
    dq_config_apply_env(cfg);
    return cfg;

fail:
    fy_document_destroy(doc);
    ld->doc = NULL;
    dq_config_free(cfg);
    return NULL;
}

/* ---- public ------------------------------------------------------------------------ */

dq_config *dq_config_new_default(void)
{
    dq_config *cfg = calloc(1, sizeof *cfg);
    if (cfg == NULL)
        return NULL;
    cfg->redis_url = strdup(DEFAULT_REDIS_URL);
    cfg->redis_timeout_ms = DEFAULT_REDIS_TIMEOUT_MS;
    cfg->max_request_bytes = DEFAULT_MAX_REQUEST_BYTES;
    cfg->max_depth = DEFAULT_MAX_DEPTH;
    cfg->issued_at_window_ms = DEFAULT_ISSUED_AT_WINDOW_MS;
    cfg->schemas_dir = default_schemas_dir();
    cfg->topic_requests = strdup(DQ_TOPIC_REQUESTS);
    cfg->topic_events = strdup(DQ_TOPIC_EVENTS);
    cfg->topic_dead = strdup(DQ_TOPIC_DEAD);
    if (cfg->redis_url == NULL || cfg->schemas_dir == NULL || cfg->topic_requests == NULL ||
        cfg->topic_events == NULL || cfg->topic_dead == NULL)
        goto fail;
    return cfg;

fail:
    dq_config_free(cfg);
    return NULL;
}

dq_config *dq_config_load(const char *path, char *err, size_t errlen)
{
    return dq_config_load_sections(path, NULL, err, errlen);
}

dq_config *dq_config_load_sections(const char *path, const char *const *sections, char *err,
                                   size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (path == NULL || path[0] == '\0')
        path = getenv("DEPLOYQ_CONFIG");
    if (path == NULL || path[0] == '\0') {
        loader ld = {.name = "defaults", .err = err, .errlen = errlen};
        return load_doc(&ld, NULL);
    }

    loader ld = {.name = path, .path = path, .err = err, .errlen = errlen, .strict = sections};
    /* libfyaml only says "failed to open": check first to give the reason. */
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fail_at(&ld, NULL, "cannot read: %s", strerror(errno));
        return NULL;
    }
    fclose(f);

    char *dir = strdup(path);
    if (dir == NULL) {
        fail_at(&ld, NULL, "out of memory");
        return NULL;
    }
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        dir[0] = '\0';
    else if (slash == dir)
        slash[1] = '\0';
    else
        *slash = '\0';
    ld.dir = dir[0] != '\0' ? dir : NULL; /* a bare file name: relative to the cwd already */

    int empty;
    struct fy_document *doc = parse(&ld, path, NULL, 0, &empty);
    dq_config *cfg = NULL;
    if (doc != NULL || empty)
        cfg = load_doc(&ld, doc);
    free(dir);
    return cfg;
}

dq_config *dq_config_load_string(const char *yaml, size_t len, const char *name, char *err,
                                 size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    loader ld = {.name = name != NULL ? name : "<string>", .err = err, .errlen = errlen};
    if (yaml == NULL)
        yaml = "";
    /* libfyaml keeps pointers into the text: give it a copy it owns and frees. */
    char *copy = malloc(len + 1);
    if (copy == NULL) {
        fail_at(&ld, NULL, "out of memory");
        return NULL;
    }
    memcpy(copy, yaml, len);
    copy[len] = '\0';
    int empty;
    struct fy_document *doc = parse(&ld, NULL, copy, len, &empty);
    if (doc == NULL && !empty)
        return NULL;
    return load_doc(&ld, doc);
}

dq_config *dq_config_from_json(const cJSON *root, const char *name, char *err, size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    loader ld = {.name = name != NULL ? name : "<json>", .err = err, .errlen = errlen};
    dq_config *cfg = dq_config_new_default();
    if (cfg == NULL) {
        fail_at(&ld, NULL, "out of memory");
        return NULL;
    }
    ld.cfg = cfg;
    if (root != NULL) {
        cfg->tree = calloc(1, sizeof *cfg->tree);
        if (cfg->tree == NULL || (cfg->tree->root = cJSON_Duplicate(root, 1)) == NULL) {
            fail_at(&ld, NULL, "out of memory");
            goto fail;
        }
        if (read_root(&ld, cfg->tree->root) < 0)
            goto fail;
    }
    dq_config_apply_env(cfg);
    return cfg;

fail:
    dq_config_free(cfg);
    return NULL;
}

void dq_config_free(dq_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->path);
    for (size_t i = 0; i < cfg->n_kafka; i++) {
        free(cfg->kafka[i].key);
        free(cfg->kafka[i].value);
    }
    free(cfg->kafka);
    free(cfg->redis_url);
    free(cfg->schemas_dir);
    free(cfg->topic_requests);
    free(cfg->topic_events);
    free(cfg->topic_dead);
    free(cfg->group_prefix);
    for (size_t i = 0; i < cfg->n_keys; i++) {
        free(cfg->keys[i].id);
        free(cfg->keys[i].public_key);
        free(cfg->keys[i].role);
        for (size_t j = 0; j < cfg->keys[i].n_services; j++)
            free(cfg->keys[i].services[j]);
        free(cfg->keys[i].services);
        for (size_t j = 0; j < cfg->keys[i].n_environments; j++)
            free(cfg->keys[i].environments[j]);
        free(cfg->keys[i].environments);
    }
    free(cfg->keys);
    for (size_t i = 0; i < cfg->n_services; i++) {
        for (size_t j = 0; j < cfg->services[i].n_envs; j++) {
            free(cfg->services[i].envs[j].name);
            free(cfg->services[i].envs[j].requires);
        }
        free(cfg->services[i].envs);
        free(cfg->services[i].name);
    }
    free(cfg->services);
    free(cfg->index);
    tree_free(cfg->tree);
    free(cfg);
}

int dq_config_set_kafka(dq_config *cfg, const char *key, const char *value)
{
    if (cfg == NULL || key == NULL || value == NULL)
        return -1;
    for (size_t i = 0; i < cfg->n_kafka; i++) {
        if (strcmp(cfg->kafka[i].key, key) == 0) {
            if (kafka_key_is_secret(key))
                dq_log_redact(value);
            return set_str(&cfg->kafka[i].value, value);
        }
    }
    return kafka_add(cfg, key, value);
}

const char *dq_config_kafka_get(const dq_config *cfg, const char *key)
{
    if (cfg == NULL || key == NULL)
        return NULL;
    for (size_t i = 0; i < cfg->n_kafka; i++)
        if (strcmp(cfg->kafka[i].key, key) == 0)
            return cfg->kafka[i].value;
    return NULL;
}

void dq_config_apply_env(dq_config *cfg)
{
    if (cfg == NULL)
        return;
    const char *brokers = getenv("DEPLOYQ_BROKERS");
    if (brokers != NULL && brokers[0] != '\0' &&
        dq_config_set_kafka(cfg, "bootstrap.servers", brokers) < 0)
        dq_warn("config: out of memory applying DEPLOYQ_BROKERS");
    const char *url = getenv("DEPLOYQ_REDIS_URL");
    if (url != NULL && url[0] != '\0') {
        redact_url_password(url);
        if (set_str(&cfg->redis_url, url) < 0)
            dq_warn("config: out of memory applying DEPLOYQ_REDIS_URL");
    }
}

const dq_service *dq_config_service(const dq_config *cfg, const char *name)
{
    if (cfg == NULL || name == NULL)
        return NULL;
    if (cfg->index != NULL) {
        const struct index_slot *s = index_find(cfg->index, NULL, name);
        return s != NULL ? s->svc : NULL;
    }
    for (size_t i = 0; i < cfg->n_services; i++)
        if (cfg->services[i].name != NULL && strcmp(cfg->services[i].name, name) == 0)
            return &cfg->services[i];
    return NULL;
}

const dq_environment *dq_config_environment(const dq_config *cfg, const char *service,
                                            const char *env)
{
    return env_of(cfg, dq_config_service(cfg, service), env);
}

const dq_key *dq_config_key(const dq_config *cfg, const char *id)
{
    if (cfg == NULL || id == NULL)
        return NULL;
    for (size_t i = 0; i < cfg->n_keys; i++)
        if (cfg->keys[i].id != NULL && strcmp(cfg->keys[i].id, id) == 0)
            return &cfg->keys[i];
    return NULL;
}

static int listed(char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return 1;
    return 0;
}

int dq_key_in_scope(const dq_key *key, const char *service, const char *environment)
{
    if (key == NULL || service == NULL || environment == NULL)
        return 0;
    return (key->services == NULL || listed(key->services, key->n_services, service)) &&
           (key->environments == NULL || listed(key->environments, key->n_environments, environment));
}

const cJSON *dq_config_env_view(const dq_config *cfg, const char *service, const char *env)
{
    const dq_environment *e = dq_config_environment(cfg, service, env);
    return e != NULL ? e->view : NULL;
}

int dq_config_env_watched(const dq_config *cfg, const char *service, const char *env)
{
    return dq_json_get(dq_config_env_view(cfg, service, env), "monitor") != NULL;
}

const cJSON *dq_config_view(const dq_config *cfg, const char *path)
{
    const cJSON *cur = cfg != NULL && cfg->tree != NULL ? cfg->tree->root : NULL;
    while (cur != NULL && path != NULL && path[0] != '\0') {
        size_t len = strcspn(path, ".");
        const cJSON *it = NULL;
        if (cJSON_IsObject(cur))
            for (it = cur->child; it != NULL; it = it->next)
                if (strncmp(it->string, path, len) == 0 && it->string[len] == '\0')
                    break;
        cur = it;
        path += len;
        if (path[0] == '.')
            path++;
    }
    return cur;
}

int dq_config_line(const dq_config *cfg, const cJSON *item)
{
    const pos *p = cfg != NULL ? pos_find(cfg->tree, item) : NULL;
    return p != NULL ? p->line : 0;
}

/* The "file:line: " prefix of a message at line, "" when the line is unknown. */
static const char *where_line(const dq_config *cfg, int line, char *out, size_t n)
{
    if (out == NULL || n == 0)
        return "";
    out[0] = '\0';
    if (line > 0)
        snprintf(out, n, "%s:%d: ", cfg != NULL && cfg->path != NULL ? cfg->path : "deployq.yaml",
                 line);
    return out;
}

const char *dq_config_where(const dq_config *cfg, const cJSON *item, char *out, size_t n)
{
    return where_line(cfg, dq_config_line(cfg, item), out, n);
}

int dq_config_fail(const dq_config *cfg, const cJSON *item, char *err, size_t errlen,
                   const char *fmt, ...)
{
    char where[512], msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s%s", dq_config_where(cfg, item, where, sizeof where), msg);
    return -1;
}

const char *dq_config_text(const dq_config *cfg, const cJSON *item, char *out, size_t n)
{
    if (item == NULL)
        return NULL;
    if (cJSON_IsString(item))
        return item->valuestring;
    const pos *p = cfg != NULL ? pos_find(cfg->tree, item) : NULL;
    if (p != NULL)
        return p->text;
    if (cJSON_IsTrue(item))
        return "true";
    if (cJSON_IsFalse(item))
        return "false";
    if (!cJSON_IsNumber(item) || out == NULL || n == 0)
        return NULL;
    double d = item->valuedouble;
    if (d > -1e15 && d < 1e15 && d == (double)(long long)d)
        snprintf(out, n, "%lld", (long long)d);
    else
        snprintf(out, n, "%.17g", d);
    return out;
}

int dq_config_duration_key(const dq_config *cfg, const cJSON *sec, const char *where,
                           const char *key, int64_t min_ms, const char *example, int64_t *out,
                           char *err, size_t errlen)
{
    const cJSON *v = dq_json_get(sec, key);
    char num[32];
    const char *text = dq_config_text(cfg, v, num, sizeof num);
    int64_t ms;

    if (!v)
        return 0;
    ms = text ? dq_duration_parse(text) : -1;
    if (ms < 0 || ms < min_ms)
        return dq_config_fail(cfg, v, err, errlen, "%s.%s: expected a duration such as %s", where, key,
                              example);
    *out = ms;
    return 0;
}

int dq_config_check_keys(const dq_config *cfg, const cJSON *obj, const char *const allowed[],
                         const char *what, char *err, size_t errlen)
{
    char msg[768], where[512];
    const cJSON *bad = unknown_key(obj, allowed, what, msg, sizeof msg);
    if (bad == NULL)
        return 0;
    const pos *p = cfg != NULL ? pos_find(cfg->tree, bad) : NULL;
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s%s",
                 where_line(cfg, p != NULL ? p->key_line : 0, where, sizeof where), msg);
    return -1;
}

/* The line of node or, failing that, of its first key or item, looking only downwards:
 * 0 when nothing below has a mark (an empty scalar has no token). Never climbing is what
 * keeps node_line finite: a child without a line once sent it back up to the
 * parent, whose first child was that child again ("-", or a mapping with an empty key). */
static int node_line_down(struct fy_node *node)
{
    void *it = NULL;

    if (node == NULL)
        return 0;
    if (fy_node_get_type(node) == FYNT_SCALAR) {
        struct fy_token *tok = fy_node_get_scalar_token(node);
        const struct fy_mark *mark = tok != NULL ? fy_token_start_mark(tok) : NULL;
        return mark != NULL ? mark->line + 1 : 0;
    }
    if (is_mapping(node)) {
        struct fy_node_pair *first = fy_node_mapping_iterate(node, &it);
        return first != NULL ? node_line_down(fy_node_pair_key(first)) : 0;
    }
    if (is_sequence(node))
        return node_line_down(fy_node_sequence_iterate(node, &it));
    return 0;
}

/* The 1-based line where node starts in its file: a scalar's own line; a mapping or
 * sequence that is the value of a key gives the key's line. 0 for NULL. */
static int node_line(struct fy_node *node)
{
    if (node == NULL)
        return 0;
    if (fy_node_get_type(node) == FYNT_SCALAR) {
        struct fy_token *tok = fy_node_get_scalar_token(node);
        const struct fy_mark *mark = tok != NULL ? fy_token_start_mark(tok) : NULL;
        if (mark != NULL)
            return mark->line + 1;
    } else {
        const node_meta *m = fy_node_get_meta(node); /* a copy made for an alias */
        if (m != NULL && m->line > 0)
            return m->line;
    }
    /* libfyaml 0.7 has no start mark for a mapping or sequence: point at the key that
     * introduces it, which is also where a person looks for it. */
    struct fy_node *parent = fy_node_get_parent(node);
    if (is_mapping(parent)) {
        void *it = NULL;
        struct fy_node_pair *pair;
        while ((pair = fy_node_mapping_iterate(parent, &it)) != NULL)
            if (fy_node_pair_value(pair) == node && fy_node_pair_key(pair) != NULL) {
                int line = node_line_down(fy_node_pair_key(pair));
                if (line > 0)
                    return line;
                break;
            }
    }
    int line = node_line_down(node);
    if (line > 0)
        return line;
    return parent != NULL ? node_line(parent) : 1;
}

/* The resolved text of a scalar node; NULL for an empty value or a collection. */
static const char *node_scalar(struct fy_node *node)
{
    const node_meta *m = meta_of(node);
    return m != NULL ? m->text : NULL;
}

/* YAML 1.2 core schema numbers that JSON can hold (not .inf/.nan). */
static int plain_number(const char *s, double *out)
{
    char *end;
    errno = 0;
    if (s[0] == '0' && s[1] == 'x' && s[2] != '\0') {
        unsigned long long v = strtoull(s + 2, &end, 16);
        if (*end != '\0' || errno != 0 || s[2] == '-' || s[2] == '+' || s[2] == ' ')
            return 0;
        *out = (double)v;
        return 1;
    }
    if (s[0] == '0' && s[1] == 'o' && s[2] != '\0') {
        unsigned long long v = strtoull(s + 2, &end, 8);
        if (*end != '\0' || errno != 0 || s[2] == '-' || s[2] == '+' || s[2] == ' ')
            return 0;
        *out = (double)v;
        return 1;
    }
    /* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
    const char *p = s;
    if (*p == '-' || *p == '+')
        p++;
    size_t digits = 0;
    while (*p >= '0' && *p <= '9')
        p++, digits++;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9')
            p++, digits++;
    }
    if (digits == 0)
        return 0;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '-' || *p == '+')
            p++;
        if (!(*p >= '0' && *p <= '9'))
            return 0;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p != '\0')
        return 0;
    *out = strtod(s, NULL);
    return 1;
}

static cJSON *scalar_json(struct fy_node *node)
{
    const node_meta *m = meta_of(node);
    if (m == NULL)
        return cJSON_CreateNull();
    size_t taglen = 0;
    const char *tag = fy_node_get_tag(node, &taglen);
    int str_tag = tag != NULL && taglen == strlen("tag:yaml.org,2002:str") &&
                  memcmp(tag, "tag:yaml.org,2002:str", taglen) == 0;
    if (m->from_env || str_tag || fy_node_get_style(node) != FYNS_PLAIN)
        return cJSON_CreateString(m->text);
    if (is_null(node))
        return cJSON_CreateNull();
    const char *s = m->text;
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0)
        return cJSON_CreateTrue();
    if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0)
        return cJSON_CreateFalse();
    double d;
    if (plain_number(s, &d))
        return cJSON_CreateNumber(d);
    return cJSON_CreateString(s);
}

/* ---- the view ---------------------------------------------------------------------- */

/* The line node_line() gives node, the value of key in a mapping (key NULL: an item of a
 * list, or the root) whose own line is parent_line, without searching the mapping for the
 * pair, so that the view is built in time linear in the document. */
static int value_line(struct fy_node *node, struct fy_node *key, int parent_line)
{
    if (node == NULL)
        return key != NULL ? node_line(key) : parent_line;
    if (fy_node_get_type(node) == FYNT_SCALAR) {
        struct fy_token *tok = fy_node_get_scalar_token(node);
        const struct fy_mark *mark = tok != NULL ? fy_token_start_mark(tok) : NULL;
        if (mark != NULL)
            return mark->line + 1;
    } else {
        const node_meta *m = fy_node_get_meta(node); /* a copy made for an alias */
        if (m != NULL && m->line > 0)
            return m->line;
    }
    struct fy_node *parent = fy_node_get_parent(node);
    int line;
    if (key != NULL && is_mapping(parent) && (line = node_line_down(key)) > 0)
        return line;
    if ((line = node_line_down(node)) > 0)
        return line;
    return parent != NULL ? parent_line : 1;
}

/* A new entry for item (not in the table yet); NULL when out of memory. */
static pos *pos_add(struct dq_config_tree *t, const cJSON *item)
{
    if ((t->n + 1) * 2 > t->cap) {
        size_t cap = t->cap != 0 ? t->cap * 2 : 64;
        pos *slot = calloc(cap, sizeof *slot);
        if (slot == NULL)
            return NULL;
        for (size_t i = 0; i < t->cap; i++) {
            if (t->slot[i].item == NULL)
                continue;
            size_t j = (size_t)table_hash(t->slot[i].item, PTR_KEY) & (cap - 1);
            while (slot[j].item != NULL)
                j = (j + 1) & (cap - 1);
            slot[j] = t->slot[i];
        }
        free(t->slot);
        t->slot = slot;
        t->cap = cap;
    }
    size_t i = (size_t)table_hash(item, PTR_KEY) & (t->cap - 1);
    while (t->slot[i].item != NULL)
        i = (i + 1) & (t->cap - 1);
    t->slot[i].item = item;
    t->n++;
    return &t->slot[i];
}

static void tree_free(struct dq_config_tree *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->cap; i++)
        free(t->slot[i].text);
    free(t->slot);
    cJSON_Delete(t->root);
    free(t);
}

/*
 * The view of node, the value of key (NULL: a list item or the root) in a collection
 * written at parent_line, each item's position recorded in t. Mappings become objects (an
 * empty key is ""), sequences arrays, scalars as scalar_json() says. NULL when out of
 * memory. Recursion is bounded by NESTING_MAX, which expand_aliases() checked.
 */
static cJSON *view_of(struct dq_config_tree *t, struct fy_node *node, struct fy_node *key,
                      int parent_line)
{
    int line = value_line(node, key, parent_line);
    cJSON *item = NULL;
    char *text = NULL;

    if (node == NULL || fy_node_get_type(node) == FYNT_SCALAR) {
        const node_meta *m = meta_of(node);
        item = node != NULL ? scalar_json(node) : cJSON_CreateNull();
        if (item != NULL && !cJSON_IsString(item) && m != NULL &&
            (text = strdup(m->text)) == NULL)
            goto oom;
    } else if (is_sequence(node)) {
        void *it = NULL;
        struct fy_node *child;
        item = cJSON_CreateArray();
        while (item != NULL && (child = fy_node_sequence_iterate(node, &it)) != NULL) {
            cJSON *c = view_of(t, child, NULL, line);
            if (c == NULL || !cJSON_AddItemToArray(item, c)) {
                cJSON_Delete(c);
                goto oom;
            }
        }
    } else {
        void *it = NULL;
        struct fy_node_pair *pair;
        item = cJSON_CreateObject();
        while (item != NULL && (pair = fy_node_mapping_iterate(node, &it)) != NULL) {
            const char *k = node_scalar(fy_node_pair_key(pair));
            cJSON *c = view_of(t, fy_node_pair_value(pair), fy_node_pair_key(pair), line);
            if (c == NULL || !cJSON_AddItemToObject(item, k != NULL ? k : "", c)) {
                cJSON_Delete(c);
                goto oom;
            }
        }
    }
    if (item == NULL)
        goto oom;
    pos *p = pos_add(t, item);
    if (p == NULL)
        goto oom;
    p->line = line;
    p->key_line = key != NULL ? node_line(key) : line;
    p->plain = node != NULL && fy_node_get_type(node) == FYNT_SCALAR &&
               fy_node_get_style(node) == FYNS_PLAIN;
    p->text = text;
    return item;

oom:
    /* the entries of the items freed here stay in t, which the failed load frees unread */
    free(text);
    cJSON_Delete(item);
    return NULL;
}

/* The document becomes cfg's view; the document itself is no longer needed after this. */
static int view_build(loader *ld, struct fy_node *root)
{
    ld->cfg->tree = calloc(1, sizeof *ld->cfg->tree);
    if (ld->cfg->tree == NULL)
        return fail_at(ld, NULL, "out of memory");
    ld->cfg->tree->root = view_of(ld->cfg->tree, root, NULL, 1);
    if (ld->cfg->tree->root == NULL)
        return fail_at(ld, root, "out of memory");
    return 0;
}
