/*
 * json.h - parsing untrusted JSON safely. Size and nesting depth are checked by a scan
 * over the raw bytes *before* cJSON sees them, so a hostile document cannot make the
 * parser recurse deeply or allocate without bound.
 */
#ifndef DQ_JSON_H
#define DQ_JSON_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#define DQ_JSON_MAX_BYTES_DEFAULT (64 * 1024)
#define DQ_JSON_MAX_DEPTH_DEFAULT 16

typedef enum {
    DQ_JSON_OK = 0,
    DQ_JSON_TOO_LARGE,
    DQ_JSON_TOO_DEEP,
    DQ_JSON_INVALID,
    DQ_JSON_NOT_OBJECT,
} dq_json_status;

/* Parse buf[len] (need not be NUL-terminated). On success returns the root, which must
 * be an object, and the caller frees it with cJSON_Delete. On failure returns NULL,
 * sets *status (when not NULL) and writes a one-line reason into err. */
cJSON *dq_json_parse(const char *buf, size_t len, size_t max_bytes, int max_depth,
                     dq_json_status *status, char *err, size_t errlen);

/* The maximum nesting depth of the JSON text (objects and arrays), counted without
 * parsing, stopping early once it passes limit. Strings are skipped correctly. */
int dq_json_depth(const char *buf, size_t len, int limit);

/* Accessors that return NULL / fallback when the member is absent or of another type
 * (dq_json_get: any type, NULL also when obj is not an object; names match exactly). */
const cJSON *dq_json_get(const cJSON *obj, const char *name);
const char *dq_json_str(const cJSON *obj, const char *name);
double dq_json_num(const cJSON *obj, const char *name, double fallback);

/* Add name: ms as RFC 3339 UTC with milliseconds (dq_time_format) to o; nothing when ms
 * is 0 (not known). */
void dq_json_add_time(cJSON *o, const char *name, int64_t ms);

/* Print compactly; returns a malloc'd string (free with free()). */
char *dq_json_print(const cJSON *item);

#endif
