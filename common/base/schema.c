/*
 * schema.c - a small JSON Schema (2020-12) validator for the schemas in schemas/.
 *
 * A schema document is compiled once into a tree of nodes (regular expressions compiled,
 * limits read, every keyword checked), so validating an instance is a walk that never
 * re-reads the schema JSON and never fails for a reason of the schema's own. Only the
 * keywords schema.h lists are understood; any other keyword is a compile error, because
 * a validator that skips what it does not know would accept what the schema forbids.
 *
 * Errors are "<JSON pointer>: <message>" ("/" stands for the document itself). They name
 * the limit that was broken and never quote the offending value: a value that fails a
 * schema may be a secret pasted into the wrong field, and these strings go into logs and
 * deploy.rejected events.
 *
 * Patterns follow JSON Schema: an unanchored search (the schemas anchor with ^...$).
 * They are compiled and run under the "C" locale, so a byte range like [!-~] means the
 * same bytes whatever locale the program set.
 */
#include "schema.h"

#include <dirent.h>
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SCHEMA_MAX_FILE_BYTES (1024 * 1024)
#define SCHEMA_MAX_SHOWN_ERRORS 8
#define SCHEMA_PATH_CAP 512
#define SCHEMA_DRAFT_URI "https://json-schema.org/draft/2020-12/schema"

/* JSON Schema's type names as bits; "integer" is a number with no fractional part. */
enum {
    TY_NULL = 1 << 0,
    TY_BOOLEAN = 1 << 1,
    TY_OBJECT = 1 << 2,
    TY_ARRAY = 1 << 3,
    TY_NUMBER = 1 << 4,
    TY_STRING = 1 << 5,
    TY_INTEGER = 1 << 6,
};

static const struct {
    const char *name;
    unsigned bit;
} type_names[] = {
    {"null", TY_NULL},     {"boolean", TY_BOOLEAN}, {"object", TY_OBJECT},   {"array", TY_ARRAY},
    {"number", TY_NUMBER}, {"string", TY_STRING},   {"integer", TY_INTEGER},
};

/* Keywords that only annotate: accepted anywhere, never change a result. */
static const char *const annotation_keywords[] = {
    "$schema", "$id", "title", "description", "$comment", "examples", "default", NULL,
};

typedef struct node node;

typedef struct prop {
    const char *name; /* points into dq_schema.doc */
    node *schema;
} prop;

enum { ADDITIONAL_ANY, ADDITIONAL_NONE, ADDITIONAL_SCHEMA };

struct node {
    int always; /* 1: the schema `true`; -1: the schema `false`; 0: keywords below */
    unsigned types; /* 0 = any type */
    const cJSON *required; /* array of strings in doc, or NULL */
    prop *props;
    size_t nprops;
    int additional;
    node *additional_schema;
    const cJSON *enum_values; /* in doc, or NULL */
    const cJSON *const_value; /* in doc, or NULL */
    const char *pattern;      /* source text in doc, or NULL */
    regex_t re;
    long min_length, max_length; /* -1 when absent */
    int has_minimum, has_maximum;
    double minimum, maximum;
    node *items;
    long min_items, max_items; /* -1 when absent */
    int date_time;
};

struct dq_schema {
    cJSON *doc; /* our copy: nodes point into it */
    node *root;
    locale_t c_locale;
};

typedef struct event_schema {
    char *type;
    dq_schema *schema;
} event_schema;

struct dq_schema_set {
    dq_schema *envelope;
    dq_schema *request;
    dq_schema *signed_;
    event_schema *events;
    size_t nevents;
};

/* ---- JSON pointers ---- */

typedef struct pathbuf {
    char buf[SCHEMA_PATH_CAP];
    size_t len;
} pathbuf;

/* Append "/<token>" with RFC 6901 escaping; returns the old length for path_pop. Control
 * bytes become '?' so a hostile member name cannot forge lines in a log. A path too long
 * for the buffer is cut short, never overrun. */
static size_t path_push(pathbuf *p, const char *token)
{
    size_t old = p->len;
    size_t cap = sizeof p->buf - 1;
    if (p->len < cap)
        p->buf[p->len++] = '/';
    for (const unsigned char *s = (const unsigned char *)token; *s && p->len < cap; s++) {
        if (*s == '~' || *s == '/') {
            if (p->len + 2 > cap)
                break;
            p->buf[p->len++] = '~';
            p->buf[p->len++] = *s == '~' ? '0' : '1';
        } else {
            p->buf[p->len++] = (*s < 0x20 || *s == 0x7f) ? '?' : (char)*s;
        }
    }
    p->buf[p->len] = '\0';
    return old;
}

static size_t path_push_index(pathbuf *p, size_t index)
{
    char tok[32];
    snprintf(tok, sizeof tok, "%zu", index);
    return path_push(p, tok);
}

static void path_pop(pathbuf *p, size_t old)
{
    p->len = old;
    p->buf[old] = '\0';
}

static const char *path_str(const pathbuf *p)
{
    return p->len ? p->buf : "/";
}

/* ---- small helpers ---- */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Without libm (the common library does not link it): at 2^53 and beyond every double
 * is a whole number, and below that the cast to long long is exact. */
static int is_integral(double v)
{
    if (!isfinite(v))
        return 0;
    if (v >= 9007199254740992.0 || v <= -9007199254740992.0)
        return 1;
    return v == (double)(long long)v;
}

/* Numbers in messages: integers without an exponent where that is exact. */
static void format_number(double v, char *out, size_t outlen)
{
    if (is_integral(v) && v < 1e15 && v > -1e15)
        snprintf(out, outlen, "%lld", (long long)v);
    else
        snprintf(out, outlen, "%.17g", v);
}

/* A value named in a message: strings bare, anything else as compact JSON. */
static void format_value(const cJSON *v, char *out, size_t outlen)
{
    if (cJSON_IsString(v)) {
        snprintf(out, outlen, "%s", v->valuestring);
        return;
    }
    char *text = cJSON_PrintUnformatted(v);
    snprintf(out, outlen, "%s", text ? text : "?");
    free(text);
}

static const char *instance_type_name(const cJSON *v)
{
    if (cJSON_IsNull(v))
        return "null";
    if (cJSON_IsBool(v))
        return "boolean";
    if (cJSON_IsObject(v))
        return "object";
    if (cJSON_IsArray(v))
        return "array";
    if (cJSON_IsNumber(v))
        return "number";
    if (cJSON_IsString(v))
        return "string";
    return "unknown";
}

static int type_matches(unsigned types, const cJSON *v)
{
    if (cJSON_IsNull(v))
        return (types & TY_NULL) != 0;
    if (cJSON_IsBool(v))
        return (types & TY_BOOLEAN) != 0;
    if (cJSON_IsObject(v))
        return (types & TY_OBJECT) != 0;
    if (cJSON_IsArray(v))
        return (types & TY_ARRAY) != 0;
    if (cJSON_IsString(v))
        return (types & TY_STRING) != 0;
    if (cJSON_IsNumber(v))
        return (types & TY_NUMBER) || ((types & TY_INTEGER) && is_integral(v->valuedouble));
    return 0;
}

static void format_types(unsigned types, char *out, size_t outlen)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof type_names / sizeof type_names[0]; i++) {
        if (!(types & type_names[i].bit))
            continue;
        int n = snprintf(out + used, outlen - used, "%s%s", used ? " or " : "", type_names[i].name);
        if (n < 0 || (size_t)n >= outlen - used)
            return;
        used += (size_t)n;
    }
}

/* Code points in a UTF-8 string, or -1 when it is not well-formed UTF-8 (overlong forms,
 * surrogates and values past U+10FFFF included). */
static long utf8_length(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    long count = 0;
    while (*p) {
        unsigned c = *p;
        size_t extra;
        unsigned cp;
        if (c < 0x80) {
            p++;
            count++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            extra = 1;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            extra = 2;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            extra = 3;
            cp = c & 0x07;
        } else {
            return -1;
        }
        for (size_t i = 1; i <= extra; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return -1;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        static const unsigned min_for_extra[] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_for_extra[extra] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return -1;
        p += extra + 1;
        count++;
    }
    return count;
}

static int read_digits(const char *s, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* RFC 3339 date-time: YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm), with real calendar
 * days and a leap second allowed. deployq keeps to the upper-case 'T' and 'Z' that it
 * writes and parses; tests/schema/crosscheck.py applies the same rule. */
static int is_date_time(const char *s)
{
    int year, month, day, hour, minute, second;
    size_t n = strlen(s);
    if (n < 20)
        return 0;
    if (read_digits(s, 4, &year) || s[4] != '-' || read_digits(s + 5, 2, &month) || s[7] != '-' ||
        read_digits(s + 8, 2, &day) || s[10] != 'T' || read_digits(s + 11, 2, &hour) ||
        s[13] != ':' || read_digits(s + 14, 2, &minute) || s[16] != ':' ||
        read_digits(s + 17, 2, &second))
        return 0;
    const char *p = s + 19;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return 0;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p == 'Z') {
        if (p[1] != '\0')
            return 0;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (strlen(p) != 6 || read_digits(p + 1, 2, &oh) || p[3] != ':' ||
            read_digits(p + 4, 2, &om) || oh > 23 || om > 59)
            return 0;
    } else {
        return 0;
    }
    static const int days_in_month[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (month < 1 || month > 12 || day < 1)
        return 0;
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    int dim = days_in_month[month - 1] + (month == 2 && leap);
    return day <= dim && hour <= 23 && minute <= 59 && second <= 60;
}

/* ---- compiling ---- */

typedef struct cctx {
    pathbuf path; /* where in the schema document we are */
    char *err;
    size_t errlen;
} cctx;

static void node_free(node *n);

static int is_annotation(const char *key)
{
    for (size_t i = 0; annotation_keywords[i]; i++)
        if (strcmp(key, annotation_keywords[i]) == 0)
            return 1;
    return 0;
}

static int read_count(cctx *c, const cJSON *v, long *out)
{
    if (!cJSON_IsNumber(v) || !is_integral(v->valuedouble) || v->valuedouble < 0 ||
        v->valuedouble > 2147483647.0) {
        set_err(c->err, c->errlen, "%s: must be a non-negative integer", path_str(&c->path));
        return -1;
    }
    *out = (long)v->valuedouble;
    return 0;
}

static int compile_type(cctx *c, const cJSON *v, unsigned *out)
{
    const cJSON *item = v;
    int is_list = cJSON_IsArray(v);
    if (is_list) {
        item = v->child;
        if (!item) {
            set_err(c->err, c->errlen, "%s: must not be empty", path_str(&c->path));
            return -1;
        }
    }
    unsigned types = 0;
    for (; item; item = is_list ? item->next : NULL) {
        unsigned bit = 0;
        if (cJSON_IsString(item))
            for (size_t i = 0; i < sizeof type_names / sizeof type_names[0]; i++)
                if (strcmp(item->valuestring, type_names[i].name) == 0)
                    bit = type_names[i].bit;
        if (!bit) {
            set_err(c->err, c->errlen, "%s: not a type name", path_str(&c->path));
            return -1;
        }
        if (types & bit) {
            set_err(c->err, c->errlen, "%s: type listed twice", path_str(&c->path));
            return -1;
        }
        types |= bit;
    }
    *out = types;
    return 0;
}

static node *compile_node(cctx *c, const cJSON *js);

/* Compile the subschema at member `key` of the current schema object. */
static node *compile_child(cctx *c, const char *key, const cJSON *js)
{
    size_t old = path_push(&c->path, key);
    node *n = compile_node(c, js);
    path_pop(&c->path, old);
    return n;
}

static int compile_properties(cctx *c, node *n, const cJSON *v)
{
    if (!cJSON_IsObject(v)) {
        set_err(c->err, c->errlen, "%s: must be an object", path_str(&c->path));
        return -1;
    }
    n->nprops = (size_t)cJSON_GetArraySize(v);
    n->props = calloc(n->nprops ? n->nprops : 1, sizeof *n->props);
    if (!n->props) {
        set_err(c->err, c->errlen, "out of memory");
        return -1;
    }
    size_t i = 0;
    for (const cJSON *m = v->child; m; m = m->next, i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(n->props[j].name, m->string) == 0) {
                set_err(c->err, c->errlen, "%s: property %s defined twice", path_str(&c->path),
                        m->string);
                return -1;
            }
        }
        n->props[i].name = m->string;
        n->props[i].schema = compile_child(c, m->string, m);
        if (!n->props[i].schema)
            return -1;
    }
    return 0;
}

static int compile_required(cctx *c, node *n, const cJSON *v)
{
    if (!cJSON_IsArray(v)) {
        set_err(c->err, c->errlen, "%s: must be an array of strings", path_str(&c->path));
        return -1;
    }
    for (const cJSON *a = v->child; a; a = a->next) {
        if (!cJSON_IsString(a)) {
            set_err(c->err, c->errlen, "%s: must be an array of strings", path_str(&c->path));
            return -1;
        }
        for (const cJSON *b = v->child; b != a; b = b->next) {
            if (strcmp(a->valuestring, b->valuestring) == 0) {
                set_err(c->err, c->errlen, "%s: %s listed twice", path_str(&c->path),
                        a->valuestring);
                return -1;
            }
        }
    }
    n->required = v;
    return 0;
}

static int compile_pattern(cctx *c, node *n, const cJSON *v)
{
    if (!cJSON_IsString(v)) {
        set_err(c->err, c->errlen, "%s: must be a string", path_str(&c->path));
        return -1;
    }
    int rc = regcomp(&n->re, v->valuestring, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char why[128];
        regerror(rc, NULL, why, sizeof why);
        set_err(c->err, c->errlen, "%s: bad pattern: %s", path_str(&c->path), why);
        return -1;
    }
    n->pattern = v->valuestring;
    return 0;
}

/* One keyword of a schema object. c->path already ends with the keyword. */
static int compile_keyword(cctx *c, node *n, const char *key, const cJSON *v)
{
    if (strcmp(key, "type") == 0)
        return compile_type(c, v, &n->types);
    if (strcmp(key, "required") == 0)
        return compile_required(c, n, v);
    if (strcmp(key, "properties") == 0)
        return compile_properties(c, n, v);
    if (strcmp(key, "additionalProperties") == 0) {
        if (cJSON_IsBool(v)) {
            n->additional = cJSON_IsTrue(v) ? ADDITIONAL_ANY : ADDITIONAL_NONE;
            return 0;
        }
        n->additional = ADDITIONAL_SCHEMA;
        n->additional_schema = compile_node(c, v);
        return n->additional_schema ? 0 : -1;
    }
    if (strcmp(key, "items") == 0) {
        n->items = compile_node(c, v);
        return n->items ? 0 : -1;
    }
    if (strcmp(key, "enum") == 0) {
        if (!cJSON_IsArray(v) || !v->child) {
            set_err(c->err, c->errlen, "%s: must be a non-empty array", path_str(&c->path));
            return -1;
        }
        n->enum_values = v;
        return 0;
    }
    if (strcmp(key, "const") == 0) {
        n->const_value = v;
        return 0;
    }
    if (strcmp(key, "pattern") == 0)
        return compile_pattern(c, n, v);
    if (strcmp(key, "minLength") == 0)
        return read_count(c, v, &n->min_length);
    if (strcmp(key, "maxLength") == 0)
        return read_count(c, v, &n->max_length);
    if (strcmp(key, "minItems") == 0)
        return read_count(c, v, &n->min_items);
    if (strcmp(key, "maxItems") == 0)
        return read_count(c, v, &n->max_items);
    if (strcmp(key, "minimum") == 0 || strcmp(key, "maximum") == 0) {
        if (!cJSON_IsNumber(v)) {
            set_err(c->err, c->errlen, "%s: must be a number", path_str(&c->path));
            return -1;
        }
        if (key[1] == 'i') {
            n->has_minimum = 1;
            n->minimum = v->valuedouble;
        } else {
            n->has_maximum = 1;
            n->maximum = v->valuedouble;
        }
        return 0;
    }
    if (strcmp(key, "format") == 0) {
        if (!cJSON_IsString(v) || strcmp(v->valuestring, "date-time") != 0) {
            set_err(c->err, c->errlen, "%s: only \"date-time\" is supported", path_str(&c->path));
            return -1;
        }
        n->date_time = 1;
        return 0;
    }
    if (strcmp(key, "$schema") == 0) {
        if (!cJSON_IsString(v) || strcmp(v->valuestring, SCHEMA_DRAFT_URI) != 0) {
            set_err(c->err, c->errlen, "%s: only %s is supported", path_str(&c->path),
                    SCHEMA_DRAFT_URI);
            return -1;
        }
        return 0;
    }
    if (is_annotation(key))
        return 0;
    set_err(c->err, c->errlen, "%s: unknown keyword", path_str(&c->path));
    return -1;
}

static node *compile_node(cctx *c, const cJSON *js)
{
    node *n = calloc(1, sizeof *n);
    if (!n) {
        set_err(c->err, c->errlen, "out of memory");
        return NULL;
    }
    n->min_length = n->max_length = n->min_items = n->max_items = -1;
    if (cJSON_IsBool(js)) {
        n->always = cJSON_IsTrue(js) ? 1 : -1;
        return n;
    }
    if (!cJSON_IsObject(js)) {
        set_err(c->err, c->errlen, "%s: a schema must be an object or a boolean",
                path_str(&c->path));
        goto fail;
    }
    for (const cJSON *m = js->child; m; m = m->next) {
        size_t old = path_push(&c->path, m->string);
        int rc = 0;
        /* JSON lets a member repeat; a keyword given twice has no single meaning. */
        for (const cJSON *prev = js->child; prev != m && rc == 0; prev = prev->next)
            if (strcmp(prev->string, m->string) == 0) {
                set_err(c->err, c->errlen, "%s: keyword given twice", path_str(&c->path));
                rc = -1;
            }
        if (rc == 0)
            rc = compile_keyword(c, n, m->string, m);
        path_pop(&c->path, old);
        if (rc != 0)
            goto fail;
    }
    if (n->min_length >= 0 && n->max_length >= 0 && n->min_length > n->max_length) {
        set_err(c->err, c->errlen, "%s: minLength is above maxLength", path_str(&c->path));
        goto fail;
    }
    if (n->min_items >= 0 && n->max_items >= 0 && n->min_items > n->max_items) {
        set_err(c->err, c->errlen, "%s: minItems is above maxItems", path_str(&c->path));
        goto fail;
    }
    return n;
fail:
    node_free(n);
    return NULL;
}

static void node_free(node *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->nprops; i++)
        node_free(n->props[i].schema);
    free(n->props);
    node_free(n->additional_schema);
    node_free(n->items);
    if (n->pattern)
        regfree(&n->re);
    free(n);
}

dq_schema *dq_schema_compile(const cJSON *schema_doc, char *err, size_t errlen)
{
    set_err(err, errlen, "%s", "");
    if (!schema_doc) {
        set_err(err, errlen, "no schema document");
        return NULL;
    }
    cctx *c = calloc(1, sizeof *c);
    dq_schema *s = calloc(1, sizeof *s);
    locale_t old = (locale_t)0;
    int switched = 0;
    if (!c || !s) {
        set_err(err, errlen, "out of memory");
        goto fail;
    }
    c->err = err;
    c->errlen = errlen;
    s->doc = cJSON_Duplicate(schema_doc, 1);
    s->c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    if (!s->doc || !s->c_locale) {
        set_err(err, errlen, "out of memory");
        goto fail;
    }
    old = uselocale(s->c_locale);
    switched = 1;
    s->root = compile_node(c, s->doc);
    if (!s->root)
        goto fail;
    uselocale(old);
    free(c);
    return s;
fail:
    if (switched)
        uselocale(old);
    free(c);
    dq_schema_free(s);
    return NULL;
}

void dq_schema_free(dq_schema *s)
{
    if (!s)
        return;
    node_free(s->root);
    cJSON_Delete(s->doc);
    if (s->c_locale)
        freelocale(s->c_locale);
    free(s);
}

/* Read a file of at most SCHEMA_MAX_FILE_BYTES into a NUL-terminated buffer. */
static char *read_small_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    if (!f) {
        set_err(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    buf = malloc(SCHEMA_MAX_FILE_BYTES + 2);
    if (!buf) {
        set_err(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    /* Read one byte past the limit: that is how an oversized file (or a pipe) shows. */
    size_t n = fread(buf, 1, SCHEMA_MAX_FILE_BYTES + 1, f);
    if (ferror(f)) {
        set_err(err, errlen, "%s: read error", path);
        goto fail;
    }
    if (n > SCHEMA_MAX_FILE_BYTES) {
        set_err(err, errlen, "%s: larger than 1 MiB", path);
        goto fail;
    }
    buf[n] = '\0';
    fclose(f);
    *len = n;
    return buf;
fail:
    free(buf);
    fclose(f);
    return NULL;
}

dq_schema *dq_schema_load_file(const char *path, char *err, size_t errlen)
{
    size_t len = 0;
    char why[256];
    char *text = read_small_file(path, &len, err, errlen);
    if (!text)
        return NULL;
    const char *end = NULL;
    /* Through the terminating NUL, which must be the file's end: a NUL inside the file
     * would otherwise hide the rest of it. */
    cJSON *doc = cJSON_ParseWithLengthOpts(text, len + 1, &end, 1);
    if (doc && end != text + len) {
        cJSON_Delete(doc);
        doc = NULL;
    }
    if (!doc) {
        set_err(err, errlen, "%s: not valid JSON (at byte %ld)", path,
                end ? (long)(end - text) : 0L);
        free(text);
        return NULL;
    }
    free(text);
    dq_schema *s = dq_schema_compile(doc, why, sizeof why);
    cJSON_Delete(doc);
    if (!s)
        set_err(err, errlen, "%s: %s", path, why);
    return s;
}

/* ---- validating ---- */

typedef struct vctx {
    pathbuf path; /* where in the instance we are */
    char *err;
    size_t errlen;
    size_t used;
    int count;
    int shown;
} vctx;

static void add_error(vctx *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_error(vctx *v, const char *fmt, ...)
{
    v->count++;
    if (v->shown >= SCHEMA_MAX_SHOWN_ERRORS || !v->err || v->errlen == 0 ||
        v->used + 1 >= v->errlen)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int n = snprintf(v->err + v->used, v->errlen - v->used, "%s%s: %s", v->shown ? "; " : "",
                     path_str(&v->path), msg);
    v->shown++;
    if (n < 0 || (size_t)n >= v->errlen - v->used)
        v->used = v->errlen - 1; /* cut short: nothing more fits */
    else
        v->used += (size_t)n;
}

static void validate_node(vctx *v, const node *n, const cJSON *inst);

static void validate_member(vctx *v, const node *n, const char *name, const cJSON *inst)
{
    size_t old = path_push(&v->path, name);
    validate_node(v, n, inst);
    path_pop(&v->path, old);
}

static void validate_string(vctx *v, const node *n, const char *s)
{
    if (n->min_length >= 0 || n->max_length >= 0) {
        long len = utf8_length(s);
        if (len < 0) {
            add_error(v, "not valid UTF-8");
            return;
        }
        if (n->min_length >= 0 && len < n->min_length)
            add_error(v, "shorter than minimum length %ld", n->min_length);
        if (n->max_length >= 0 && len > n->max_length)
            add_error(v, "longer than maximum length %ld", n->max_length);
    }
    if (n->pattern && regexec(&n->re, s, 0, NULL, 0) != 0)
        add_error(v, "does not match %s", n->pattern);
    if (n->date_time && !is_date_time(s))
        add_error(v, "not a date-time");
}

static void validate_object(vctx *v, const node *n, const cJSON *inst)
{
    if (n->required)
        for (const cJSON *r = n->required->child; r; r = r->next)
            if (!cJSON_GetObjectItemCaseSensitive(inst, r->valuestring)) {
                size_t old = path_push(&v->path, r->valuestring);
                add_error(v, "required");
                path_pop(&v->path, old);
            }
    /* Walk the instance's members, not the schema's properties: a member given twice
     * is then checked twice, whichever copy a later reader happens to pick. */
    for (const cJSON *m = inst->child; m; m = m->next) {
        const node *sub = NULL;
        for (size_t i = 0; i < n->nprops && !sub; i++)
            if (strcmp(n->props[i].name, m->string) == 0)
                sub = n->props[i].schema;
        if (sub) {
            validate_member(v, sub, m->string, m);
        } else if (n->additional == ADDITIONAL_NONE) {
            size_t old = path_push(&v->path, m->string);
            add_error(v, "additional property not allowed");
            path_pop(&v->path, old);
        } else if (n->additional == ADDITIONAL_SCHEMA) {
            validate_member(v, n->additional_schema, m->string, m);
        }
    }
}

static void validate_array(vctx *v, const node *n, const cJSON *inst)
{
    long count = (long)cJSON_GetArraySize(inst);
    if (n->min_items >= 0 && count < n->min_items)
        add_error(v, "fewer than %ld items", n->min_items);
    if (n->max_items >= 0 && count > n->max_items)
        add_error(v, "more than %ld items", n->max_items);
    if (!n->items)
        return;
    size_t i = 0;
    for (const cJSON *e = inst->child; e; e = e->next, i++) {
        size_t old = path_push_index(&v->path, i);
        validate_node(v, n->items, e);
        path_pop(&v->path, old);
    }
}

static void validate_node(vctx *v, const node *n, const cJSON *inst)
{
    if (n->always == 1)
        return;
    if (n->always == -1) {
        add_error(v, "not allowed");
        return;
    }
    if (n->types && !type_matches(n->types, inst)) {
        char want[96];
        format_types(n->types, want, sizeof want);
        /* Nothing else can be said usefully about a value of the wrong type. */
        add_error(v, "expected %s, got %s", want, instance_type_name(inst));
        return;
    }
    if (n->const_value && !cJSON_Compare(n->const_value, inst, 1)) {
        char want[256];
        format_value(n->const_value, want, sizeof want);
        add_error(v, "not equal to %s", want);
    }
    if (n->enum_values) {
        int found = 0;
        for (const cJSON *e = n->enum_values->child; e && !found; e = e->next)
            found = cJSON_Compare(e, inst, 1);
        if (!found) {
            char list[1024];
            size_t used = 0;
            list[0] = '\0';
            for (const cJSON *e = n->enum_values->child; e && used + 1 < sizeof list; e = e->next) {
                char one[256];
                format_value(e, one, sizeof one);
                int k = snprintf(list + used, sizeof list - used, "%s%s", used ? ", " : "", one);
                if (k < 0 || (size_t)k >= sizeof list - used)
                    break;
                used += (size_t)k;
            }
            add_error(v, "not one of [%s]", list);
        }
    }
    if (cJSON_IsString(inst))
        validate_string(v, n, inst->valuestring);
    else if (cJSON_IsNumber(inst)) {
        char lim[64];
        if (n->has_minimum && inst->valuedouble < n->minimum) {
            format_number(n->minimum, lim, sizeof lim);
            add_error(v, "below minimum %s", lim);
        }
        if (n->has_maximum && inst->valuedouble > n->maximum) {
            format_number(n->maximum, lim, sizeof lim);
            add_error(v, "above maximum %s", lim);
        }
    } else if (cJSON_IsObject(inst))
        validate_object(v, n, inst);
    else if (cJSON_IsArray(inst))
        validate_array(v, n, inst);
}

/* Validate with the instance path starting at prefix ("" for the document itself);
 * errors accumulate in v. */
static void validate_at(vctx *v, const dq_schema *s, const cJSON *instance, const char *prefix)
{
    locale_t old = uselocale(s->c_locale);
    size_t mark = v->path.len;
    if (prefix[0])
        path_push(&v->path, prefix);
    validate_node(v, s->root, instance);
    path_pop(&v->path, mark);
    uselocale(old);
}

static void finish_errors(vctx *v)
{
    if (v->count > v->shown && v->err && v->used + 1 < v->errlen)
        snprintf(v->err + v->used, v->errlen - v->used, "; and %d more", v->count - v->shown);
}

int dq_schema_validate(const dq_schema *s, const cJSON *instance, char *err, size_t errlen)
{
    vctx v;
    memset(&v, 0, sizeof v);
    v.err = err;
    v.errlen = errlen;
    set_err(err, errlen, "%s", "");
    if (!s || !instance) {
        add_error(&v, "%s", !s ? "no schema" : "no document");
        return v.count;
    }
    validate_at(&v, s, instance, "");
    finish_errors(&v);
    return v.count;
}

/* ---- the schema set ---- */

void dq_schema_set_free(dq_schema_set *set)
{
    if (!set)
        return;
    dq_schema_free(set->envelope);
    dq_schema_free(set->request);
    dq_schema_free(set->signed_);
    for (size_t i = 0; i < set->nevents; i++) {
        free(set->events[i].type);
        dq_schema_free(set->events[i].schema);
    }
    free(set->events);
    free(set);
}

static dq_schema *load_in(const char *dir, const char *name, char *err, size_t errlen)
{
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof path) {
        set_err(err, errlen, "%s: path too long", dir);
        return NULL;
    }
    return dq_schema_load_file(path, err, errlen);
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names of events/<type>.json, sorted so that loading is deterministic. */
static char **list_event_files(const char *events_dir, size_t *count, char *err, size_t errlen)
{
    DIR *d = opendir(events_dir);
    char **names = NULL;
    size_t n = 0, cap = 0;
    if (!d) {
        set_err(err, errlen, "%s: %s", events_dir, strerror(errno));
        return NULL;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (de->d_name[0] == '.' || len <= 5 || strcmp(de->d_name + len - 5, ".json") != 0)
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 32;
            char **grown = realloc(names, ncap * sizeof *names);
            if (!grown)
                goto nomem;
            names = grown;
            cap = ncap;
        }
        names[n] = strdup(de->d_name);
        if (!names[n])
            goto nomem;
        n++;
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof *names, compare_names);
    *count = n;
    if (!names)
        names = calloc(1, sizeof *names);
    return names;
nomem:
    set_err(err, errlen, "out of memory");
    closedir(d);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return NULL;
}

dq_schema_set *dq_schema_set_load(const char *dir, char *err, size_t errlen)
{
    char events_dir[4096];
    char **names = NULL;
    size_t nnames = 0;
    set_err(err, errlen, "%s", "");
    dq_schema_set *set = calloc(1, sizeof *set);
    if (!set) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    if (!dir)
        dir = "";
    if (!(set->envelope = load_in(dir, "envelope.json", err, errlen)) ||
        !(set->request = load_in(dir, "request.json", err, errlen)) ||
        !(set->signed_ = load_in(dir, "signed.json", err, errlen)))
        goto fail;
    int k = snprintf(events_dir, sizeof events_dir, "%s/events", dir);
    if (k < 0 || (size_t)k >= sizeof events_dir) {
        set_err(err, errlen, "%s: path too long", dir);
        goto fail;
    }
    names = list_event_files(events_dir, &nnames, err, errlen);
    if (!names)
        goto fail;
    set->events = calloc(nnames ? nnames : 1, sizeof *set->events);
    if (!set->events) {
        set_err(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < nnames; i++) {
        event_schema *es = &set->events[set->nevents];
        es->type = strndup(names[i], strlen(names[i]) - 5);
        if (!es->type) {
            set_err(err, errlen, "out of memory");
            goto fail;
        }
        set->nevents++; /* counted now so that the type is freed on failure */
        es->schema = load_in(events_dir, names[i], err, errlen);
        if (!es->schema)
            goto fail;
    }
    for (size_t i = 0; i < nnames; i++)
        free(names[i]);
    free(names);
    return set;
fail:
    for (size_t i = 0; names && i < nnames; i++)
        free(names[i]);
    free(names);
    dq_schema_set_free(set);
    return NULL;
}

const dq_schema *dq_schema_set_envelope(const dq_schema_set *set)
{
    return set ? set->envelope : NULL;
}

const dq_schema *dq_schema_set_request(const dq_schema_set *set)
{
    return set ? set->request : NULL;
}

const dq_schema *dq_schema_set_signed(const dq_schema_set *set)
{
    return set ? set->signed_ : NULL;
}

const dq_schema *dq_schema_set_event(const dq_schema_set *set, const char *type)
{
    if (!set || !type)
        return NULL;
    for (size_t i = 0; i < set->nevents; i++)
        if (strcmp(set->events[i].type, type) == 0)
            return set->events[i].schema;
    return NULL;
}

int dq_schema_validate_event(const dq_schema_set *set, const cJSON *event, char *err,
                             size_t errlen)
{
    vctx v;
    memset(&v, 0, sizeof v);
    v.err = err;
    v.errlen = errlen;
    set_err(err, errlen, "%s", "");
    if (!set || !event) {
        add_error(&v, "%s", !set ? "no schemas" : "no document");
        return v.count;
    }
    validate_at(&v, set->envelope, event, "");
    int envelope_errors = v.count;
    int is_object = cJSON_IsObject(event);
    const cJSON *type = is_object ? cJSON_GetObjectItemCaseSensitive(event, "type") : NULL;
    const cJSON *data = is_object ? cJSON_GetObjectItemCaseSensitive(event, "data") : NULL;
    const dq_schema *ds = cJSON_IsString(type) ? dq_schema_set_event(set, type->valuestring) : NULL;
    if (ds && cJSON_IsObject(data)) { /* other data the envelope has already refused */
        validate_at(&v, ds, data, "data");
    } else if (!ds && envelope_errors == 0) {
        /* The envelope knows the type but no events/<type>.json was loaded: refuse
         * rather than let data through unchecked. */
        size_t old = path_push(&v.path, "type");
        add_error(&v, "no schema for this event type");
        path_pop(&v.path, old);
    }
    finish_errors(&v);
    return v.count;
}
