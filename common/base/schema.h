/*
 * schema.h - JSON Schema (2020-12) validation, driven by the files in schemas/.
 *
 * The subset deployq's schemas use: type (string or array), required, properties,
 * additionalProperties (boolean or schema), enum, const, pattern (POSIX ERE via regcomp;
 * the schemas keep to the common subset of ECMA-262 and ERE), minLength/maxLength
 * (counted in Unicode code points), minimum/maximum, items, minItems/maxItems and
 * format "date-time" (RFC 3339). A keyword outside the subset in a schema file is an
 * error at load time, so a schema can never silently mean less than it says.
 */
#ifndef DQ_SCHEMA_H
#define DQ_SCHEMA_H

#include <cjson/cJSON.h>
#include <stddef.h>

typedef struct dq_schema dq_schema;
typedef struct dq_schema_set dq_schema_set;

/* Compile one schema document. NULL with a reason in err. The schema JSON is copied. */
dq_schema *dq_schema_compile(const cJSON *schema_doc, char *err, size_t errlen);
dq_schema *dq_schema_load_file(const char *path, char *err, size_t errlen);
void dq_schema_free(dq_schema *s);

/* Validate instance. Returns 0 when valid; otherwise the number of errors found, and
 * the first few as "path: message" lines joined by "; " into err (bounded). */
int dq_schema_validate(const dq_schema *s, const cJSON *instance, char *err, size_t errlen);

/* Every schema of a schemas/ directory: envelope.json, request.json, signed.json, and
 * events/<type>.json (the schema of that type's data). NULL with a reason in err. */
dq_schema_set *dq_schema_set_load(const char *dir, char *err, size_t errlen);
void dq_schema_set_free(dq_schema_set *set);
const dq_schema *dq_schema_set_envelope(const dq_schema_set *set);
const dq_schema *dq_schema_set_request(const dq_schema_set *set);
const dq_schema *dq_schema_set_signed(const dq_schema_set *set);
/* The data schema of an event type, or NULL when the type has none. */
const dq_schema *dq_schema_set_event(const dq_schema_set *set, const char *type);

/* Validate a whole event: the envelope, then data against its type's schema. An unknown
 * type is an error. Returns 0 valid, else the count of errors (reasons in err). */
int dq_schema_validate_event(const dq_schema_set *set, const cJSON *event, char *err,
                             size_t errlen);

#endif
