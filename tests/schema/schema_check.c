/*
 * schema_check.c - run deployq's own validator (common/base/schema.c) over JSON documents.
 *
 * tests/schema/crosscheck.py drives it over the corpus and compares every verdict with
 * Python's jsonschema, so the two validators are held to the same answers. It is also a
 * handy tool by hand:
 *   schema_check schemas/request.json doc.json...      one schema file
 *   schema_check --event schemas/ event.json...        whole events (envelope, then data)
 * Prints "<path> valid" or "<path> invalid: <errors>" per document. Exit status: 0 when
 * every document is valid, 1 when any is invalid, 2 on a usage, schema or read error.
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema.h"

#define MAX_DOC_BYTES (1024 * 1024)

static const char usage_text[] =
    "usage: schema_check <schema.json> <document.json>...\n"
    "       schema_check --event <schemas-dir> <event.json>...\n";

static void usage(const char *reason)
{
    if (reason)
        fprintf(stderr, "schema_check: %s\n", reason);
    fputs(usage_text, stderr);
    exit(2);
}

/* The parsed document, or NULL with a reason printed. */
static cJSON *read_document(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "schema_check: %s: cannot open\n", path);
        return NULL;
    }
    char *buf = malloc(MAX_DOC_BYTES + 2);
    size_t n = buf ? fread(buf, 1, MAX_DOC_BYTES + 1, f) : 0;
    fclose(f);
    if (!buf || n > MAX_DOC_BYTES) {
        fprintf(stderr, "schema_check: %s: %s\n", path, buf ? "larger than 1 MiB" : "out of memory");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    const char *end = NULL;
    /* Parse through the terminating NUL, and insist it is the file's end: a NUL byte
     * inside the file must not hide what follows it. */
    cJSON *doc = cJSON_ParseWithLengthOpts(buf, n + 1, &end, 1);
    if (doc && end != buf + n) {
        cJSON_Delete(doc);
        doc = NULL;
    }
    if (!doc)
        fprintf(stderr, "schema_check: %s: not valid JSON (at byte %ld)\n", path,
                end ? (long)(end - buf) : 0L);
    free(buf);
    return doc;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"event", required_argument, NULL, 'e'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *schemas_dir = NULL;
    int opt;
    while ((opt = getopt_long(argc, argv, "e:h", options, NULL)) != -1) {
        switch (opt) {
        case 'e':
            schemas_dir = optarg;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            usage(NULL);
        }
    }
    if (!schemas_dir && optind >= argc)
        usage("no schema file");

    char err[4096];
    dq_schema *schema = NULL;
    dq_schema_set *set = NULL;
    if (schemas_dir) {
        set = dq_schema_set_load(schemas_dir, err, sizeof err);
    } else {
        schema = dq_schema_load_file(argv[optind], err, sizeof err);
        optind++;
    }
    if (!schema && !set) {
        fprintf(stderr, "schema_check: %s\n", err);
        return 2;
    }
    if (optind >= argc)
        usage("no documents");

    int status = 0;
    for (int i = optind; i < argc; i++) {
        cJSON *doc = read_document(argv[i]);
        if (!doc) {
            status = 2;
            continue;
        }
        int errors = set ? dq_schema_validate_event(set, doc, err, sizeof err)
                         : dq_schema_validate(schema, doc, err, sizeof err);
        if (errors == 0) {
            printf("%s valid\n", argv[i]);
        } else {
            printf("%s invalid: %s\n", argv[i], err);
            if (status == 0)
                status = 1;
        }
        cJSON_Delete(doc);
    }
    dq_schema_free(schema);
    dq_schema_set_free(set);
    return status;
}
