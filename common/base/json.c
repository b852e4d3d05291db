/*
 * json.c - the one door through which untrusted JSON enters (see json.h).
 *
 * cJSON recurses once per nesting level and is lenient about what follows a value, so
 * size and depth are bounded by a scan over the raw bytes first, and afterwards the whole
 * input must have been consumed.
 */
#include "json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

int dq_json_depth(const char *buf, size_t len, int limit)
{
    int depth = 0, max = 0, in_string = 0;

    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (in_string) {
            if (c == '\\')
                i++; /* the escaped byte may be a quote: it does not end the string */
            else if (c == '"')
                in_string = 0;
            continue;
        }
        if (c == '"') {
            in_string = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > max) {
                max = depth;
                if (max > limit)
                    return max;
            }
        } else if ((c == '}' || c == ']') && depth > 0) {
            depth--;
        }
    }
    return max;
}

/* Offset of the first raw control byte that JSON does not allow (any byte below 0x20
 * inside a string, anything but tab/CR/LF outside), or of a \u0000 escape, or len.
 * cJSON would skip such bytes as whitespace or copy a NUL into a string, which would
 * silently cut it short: "api\u0000; rm -rf /" would be read as "api". */
static size_t first_control_byte(const char *buf, size_t len)
{
    int in_string = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c < 0x20 && (in_string || (c != '\t' && c != '\n' && c != '\r')))
            return i;
        if (in_string && c == '\\') {
            if (i + 5 < len && buf[i + 1] == 'u' && memcmp(buf + i + 2, "0000", 4) == 0)
                return i;
            i++;
        } else if (c == '"') {
            in_string = !in_string;
        }
    }
    return len;
}

/* The first member name that occurs twice in one object, anywhere in the tree, or NULL.
 * cJSON keeps both and finds the first, other parsers keep the last: a document that
 * means two things to two readers is refused. */
static const char *duplicate_member(const cJSON *item)
{
    for (const cJSON *a = item ? item->child : NULL; a; a = a->next) {
        const char *d;

        if (cJSON_IsObject(item))
            for (const cJSON *b = a->next; b; b = b->next)
                if (a->string && b->string && strcmp(a->string, b->string) == 0)
                    return a->string;
        d = duplicate_member(a);
        if (d)
            return d;
    }
    return NULL;
}

static cJSON *fail(dq_json_status *status, dq_json_status code, char *err, size_t errlen,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static cJSON *fail(dq_json_status *status, dq_json_status code, char *err, size_t errlen,
                   const char *fmt, ...)
{
    if (status != NULL)
        *status = code;
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return NULL;
}

cJSON *dq_json_parse(const char *buf, size_t len, size_t max_bytes, int max_depth,
                     dq_json_status *status, char *err, size_t errlen)
{
    if (buf == NULL)
        len = 0;
    if (len > max_bytes)
        return fail(status, DQ_JSON_TOO_LARGE, err, errlen, "request is %zu bytes, limit %zu",
                    len, max_bytes);
    if (dq_json_depth(buf, len, max_depth) > max_depth)
        return fail(status, DQ_JSON_TOO_DEEP, err, errlen, "JSON nesting depth exceeds %d",
                    max_depth);
    size_t bad = first_control_byte(buf, len);
    if (bad < len)
        return fail(status, DQ_JSON_INVALID, err, errlen, "invalid JSON at byte %zu", bad);

    const char *end = buf;
    cJSON *root = len > 0 ? cJSON_ParseWithLengthOpts(buf, len, &end, 0) : NULL;
    if (root == NULL)
        return fail(status, DQ_JSON_INVALID, err, errlen, "invalid JSON at byte %zu",
                    (size_t)(end - buf));
    /* cJSON stops after the first value; only whitespace may follow it. */
    while (end < buf + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
        end++;
    if (end != buf + len) {
        cJSON_Delete(root);
        return fail(status, DQ_JSON_INVALID, err, errlen, "invalid JSON at byte %zu",
                    (size_t)(end - buf));
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return fail(status, DQ_JSON_NOT_OBJECT, err, errlen, "JSON root is not an object");
    }
    {
        const char *dup = duplicate_member(root);

        if (dup) {
            /* The name is attacker input: say only that there is one, bounded. */
            char name[40];
            size_t n = 0;

            for (; dup[n] && n + 1 < sizeof name; n++)
                name[n] = (dup[n] >= 0x20 && dup[n] < 0x7f && dup[n] != '"') ? dup[n] : '?';
            name[n] = '\0';
            cJSON_Delete(root);
            return fail(status, DQ_JSON_INVALID, err, errlen, "duplicate member \"%s\"", name);
        }
    }
    if (status != NULL)
        *status = DQ_JSON_OK;
    return root;
}

const cJSON *dq_json_get(const cJSON *obj, const char *name)
{
    return cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, name) : NULL;
}

const char *dq_json_str(const cJSON *obj, const char *name)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(item) ? item->valuestring : NULL;
}

double dq_json_num(const cJSON *obj, const char *name, double fallback)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsNumber(item) ? item->valuedouble : fallback;
}

char *dq_json_print(const cJSON *item)
{
    return item != NULL ? cJSON_PrintUnformatted(item) : NULL;
}

void dq_json_add_time(cJSON *o, const char *name, int64_t ms)
{
    char t[DQ_TIME_LEN + 1];

    if (ms)
        cJSON_AddStringToObject(o, name, dq_time_format(ms, t));
}
