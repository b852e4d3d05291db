/*
 * event.c - the event envelope and the deploy request as C structs and JSON (see event.h).
 *
 * Encoding writes members in one fixed order so that the same event always has the same
 * bytes (the registry hashes them into its chain). Decoding checks the envelope only;
 * schema.h validates each type's data.
 */
#include "event.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "json.h"

const char *const dq_event_types[] = {
    DQ_EV_VALIDATED,
    DQ_EV_REJECTED,
    DQ_EV_AWAITING_APPROVAL,
    DQ_EV_STARTED,
    DQ_EV_PROVIDER_FAILED,
    DQ_EV_SUCCEEDED,
    DQ_EV_FAILED,
    DQ_EV_MONITOR_STARTED,
    DQ_EV_HEALTH_DEGRADED,
    DQ_EV_VERIFIED,
    DQ_EV_ROLLBACK_REQUESTED,
    DQ_EV_ROLLBACK_STARTED,
    DQ_EV_ROLLBACK_SUCCEEDED,
    DQ_EV_ROLLBACK_FAILED,
    DQ_EV_TRAFFIC_SWITCHED,
    DQ_EV_NOTIFICATION_SENT,
    DQ_EV_NOTIFICATION_FAILED,
    DQ_EV_APPROVAL_REFUSED,
    DQ_EV_OPERATOR_REFUSED,
    DQ_EV_CANCEL_REQUESTED,
    DQ_EV_QUEUED,
    DQ_EV_TARGET_PAUSED,
    DQ_EV_TARGET_RESUMED,
    DQ_EV_TARGET_HELD,
    DQ_EV_TARGET_RELEASED,
    DQ_EV_ROLLBACK_HELD,
    DQ_EV_DRIFT_DETECTED,
    DQ_EV_CANARY_STEP,
    DQ_EV_CANARY_ANALYSIS,
    DQ_EV_CANARY_PROMOTED,
    DQ_EV_CANARY_ABORTED,
    NULL,
};

int dq_event_type_known(const char *type)
{
    if (type == NULL)
        return 0;
    for (size_t i = 0; dq_event_types[i] != NULL; i++)
        if (strcmp(type, dq_event_types[i]) == 0)
            return 1;
    return 0;
}

/* strdup that passes NULL through; *ok drops to 0 when a copy could not be made. */
static char *dup_opt(const char *s, int *ok)
{
    if (s == NULL)
        return NULL;
    char *copy = strdup(s);
    if (copy == NULL)
        *ok = 0;
    return copy;
}

dq_event *dq_event_new(const char *type, const char *deployment_id, const char *service,
                       const char *environment, const char *version, const char *actor)
{
    if (type == NULL)
        return NULL;
    dq_event *ev = calloc(1, sizeof *ev);
    if (ev == NULL)
        return NULL;

    int ok = 1;
    ev->type = dup_opt(type, &ok);
    ev->deployment_id = dup_opt(deployment_id, &ok);
    ev->service = dup_opt(service, &ok);
    ev->environment = dup_opt(environment, &ok);
    ev->version = dup_opt(version, &ok);
    ev->actor = dup_opt(actor, &ok);
    ev->data = cJSON_CreateObject();
    ev->at_ms = dq_now_ms();
    if (!ok || ev->data == NULL || dq_uuid_v4(ev->id) != 0)
        goto fail;
    return ev;

fail:
    dq_event_free(ev);
    return NULL;
}

void dq_event_free(dq_event *ev)
{
    if (ev == NULL)
        return;
    free(ev->type);
    free(ev->deployment_id);
    free(ev->service);
    free(ev->environment);
    free(ev->version);
    free(ev->actor);
    cJSON_Delete(ev->data);
    free(ev);
}

void dq_event_set_id_from(dq_event *ev, const char *name)
{
    if (ev != NULL && name != NULL)
        dq_uuid_from_name(name, ev->id);
}

/* Add a string member unless value is NULL. Returns 0, or -1 on allocation failure. */
static int add_opt(cJSON *obj, const char *name, const char *value)
{
    if (value == NULL)
        return 0;
    return cJSON_AddStringToObject(obj, name, value) != NULL ? 0 : -1;
}

char *dq_event_encode(const dq_event *ev)
{
    char at[DQ_TIME_LEN + 1];
    char *text = NULL;

    if (ev == NULL || ev->type == NULL)
        return NULL;
    cJSON *obj = cJSON_CreateObject();
    if (obj == NULL)
        return NULL;
    if (add_opt(obj, "schema", DQ_EVENT_SCHEMA) || add_opt(obj, "id", ev->id) ||
        add_opt(obj, "type", ev->type) || add_opt(obj, "deployment_id", ev->deployment_id) ||
        add_opt(obj, "service", ev->service) || add_opt(obj, "environment", ev->environment) ||
        add_opt(obj, "version", ev->version) ||
        add_opt(obj, "at", dq_time_format(ev->at_ms, at)) || add_opt(obj, "actor", ev->actor) ||
        cJSON_AddNumberToObject(obj, "fence", (double)ev->fence) == NULL)
        goto done;
    /* A reference, not a copy: the event keeps owning its data. */
    if (ev->data != NULL) {
        if (!cJSON_AddItemReferenceToObject(obj, "data", ev->data))
            goto done;
    } else if (cJSON_AddObjectToObject(obj, "data") == NULL) {
        goto done;
    }
    text = cJSON_PrintUnformatted(obj);

done:
    cJSON_Delete(obj);
    return text;
}

/* An optional string member: absent is fine, another type is not. */
static int opt_string(const cJSON *obj, const char *name, char **out, char *err, size_t errlen)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (item == NULL || cJSON_IsNull(item))
        return 0;
    if (!cJSON_IsString(item)) {
        snprintf(err, errlen, "event member %s is not a string", name);
        return -1;
    }
    *out = strdup(item->valuestring);
    if (*out == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

dq_event *dq_event_decode(const char *buf, size_t len, char *err, size_t errlen)
{
    char scratch[1];
    dq_event *ev = NULL;

    if (err == NULL || errlen == 0) {
        err = scratch;
        errlen = sizeof scratch;
    }
    cJSON *root = dq_json_parse(buf, len, DQ_JSON_MAX_BYTES_DEFAULT, DQ_JSON_MAX_DEPTH_DEFAULT,
                                NULL, err, errlen);
    if (root == NULL)
        return NULL;

    const char *schema = dq_json_str(root, "schema");
    const char *id = dq_json_str(root, "id");
    const char *type = dq_json_str(root, "type");
    const char *at = dq_json_str(root, "at");
    const cJSON *fence = cJSON_GetObjectItemCaseSensitive(root, "fence");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(root, "data");
    int64_t at_ms;

    if (schema == NULL || strcmp(schema, DQ_EVENT_SCHEMA) != 0) {
        snprintf(err, errlen, "event schema is not %s", DQ_EVENT_SCHEMA);
        goto fail;
    }
    if (!dq_uuid_valid(id)) {
        snprintf(err, errlen, "event id is not a UUID");
        goto fail;
    }
    if (type == NULL || type[0] == '\0') {
        snprintf(err, errlen, "event type is missing or not a string");
        goto fail;
    }
    if (at == NULL || dq_time_parse(at, &at_ms) != 0) {
        snprintf(err, errlen, "event at is not an RFC 3339 time");
        goto fail;
    }
    /* 2^53: beyond it a double no longer holds every integer. */
    if (!cJSON_IsNumber(fence) || fence->valuedouble < 0 ||
        fence->valuedouble > 9007199254740992.0 ||
        fence->valuedouble != (double)(int64_t)fence->valuedouble) {
        snprintf(err, errlen, "event fence is not a non-negative integer");
        goto fail;
    }
    if (!cJSON_IsObject(data)) {
        snprintf(err, errlen, "event data is not an object");
        goto fail;
    }

    ev = calloc(1, sizeof *ev);
    if (ev == NULL || (ev->type = strdup(type)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    dq_strlcpy(ev->id, id, sizeof ev->id);
    ev->at_ms = at_ms;
    ev->fence = (int64_t)fence->valuedouble;
    if (opt_string(root, "deployment_id", &ev->deployment_id, err, errlen) ||
        opt_string(root, "service", &ev->service, err, errlen) ||
        opt_string(root, "environment", &ev->environment, err, errlen) ||
        opt_string(root, "version", &ev->version, err, errlen) ||
        opt_string(root, "actor", &ev->actor, err, errlen))
        goto fail;
    ev->data = cJSON_DetachItemFromObjectCaseSensitive(root, "data");
    cJSON_Delete(root);
    return ev;

fail:
    dq_event_free(ev);
    cJSON_Delete(root);
    return NULL;
}

/* ---- dq_event_scan: the envelope without a cJSON tree ------------------------------- */

/* The scan accepts a strict subset of what dq_json_parse() accepts (JSON with no escape,
 * no control byte, no BOM, whitespace only between tokens, numbers of at most 63 bytes,
 * which cJSON reads whole), checks the same limits and duplicate members, so that "sure"
 * always means "dq_event_decode would succeed with these values". */

#define SCAN_MAX_MEMBERS 64 /* members per object it checks for duplicates; more: unsure */

typedef struct {
    const char *p, *end;
} scanner;

static void scan_ws(scanner *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

/* The index of the first '"', backslash or control byte in p[0, n), or n. Sixteen bytes a
 * step where SSE2 is there (every x86-64): most of an event is string bytes. */
static size_t string_stop(const char *p, size_t n)
{
    size_t i = 0;

#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
    const __m128i ctl_max = _mm_set1_epi8(0x1f);

    for (; i + 16 <= n; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
        /* unsigned v <= 0x1f exactly when max(v, 0x1f) == 0x1f */
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote),
                                                _mm_cmpeq_epi8(v, backslash)),
                                   _mm_cmpeq_epi8(_mm_max_epu8(v, ctl_max), ctl_max));
        int mask = _mm_movemask_epi8(hit);

        if (mask)
            return i + (size_t)__builtin_ctz((unsigned)mask);
    }
#endif
    for (; i < n; i++) {
        unsigned char c = (unsigned char)p[i];

        if (c == '"' || c == '\\' || c < 0x20)
            return i;
    }
    return n;
}

/* A string without escapes or control bytes; *out gets the bytes between the quotes. */
static int scan_string(scanner *s, dq_event_span *out)
{
    const char *start = s->p + 1; /* after the opening quote */
    size_t n = (size_t)(s->end - start), k = string_stop(start, n);

    if (k == n || start[k] != '"')
        return -1;
    out->p = start;
    out->n = k;
    s->p = start + k + 1;
    return 0;
}

/* An RFC 8259 number, at most 63 bytes (cJSON copies up to 63 into its buffer). *is_int:
 * neither fraction nor exponent. */
static int scan_number(scanner *s, int *is_int)
{
    const char *q = s->p;

    *is_int = 1;
    if (q < s->end && *q == '-')
        q++;
    if (q >= s->end)
        return -1;
    if (*q == '0') {
        q++;
    } else if (*q >= '1' && *q <= '9') {
        while (q < s->end && *q >= '0' && *q <= '9')
            q++;
    } else {
        return -1;
    }
    if (q < s->end && *q == '.') {
        *is_int = 0;
        if (++q >= s->end || *q < '0' || *q > '9')
            return -1;
        while (q < s->end && *q >= '0' && *q <= '9')
            q++;
    }
    if (q < s->end && (*q == 'e' || *q == 'E')) {
        *is_int = 0;
        if (++q < s->end && (*q == '+' || *q == '-'))
            q++;
        if (q >= s->end || *q < '0' || *q > '9')
            return -1;
        while (q < s->end && *q >= '0' && *q <= '9')
            q++;
    }
    if (q - s->p > 63)
        return -1;
    s->p = q;
    return 0;
}

static int scan_literal(scanner *s, const char *word, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return -1;
    s->p += n;
    return 0;
}

static int span_same(dq_event_span a, dq_event_span b)
{
    return a.n == b.n && (a.n == 0 || (a.p[0] == b.p[0] && memcmp(a.p, b.p, a.n) == 0));
}

static int scan_value(scanner *s, int depth);

/* An object or array at s->p (its opening bracket); depth counts it. */
static int scan_container(scanner *s, int depth)
{
    int is_object = *s->p == '{';
    char close = is_object ? '}' : ']';
    dq_event_span names[SCAN_MAX_MEMBERS];
    size_t n = 0;

    if (depth > DQ_JSON_MAX_DEPTH_DEFAULT)
        return -1;
    s->p++;
    scan_ws(s);
    if (s->p < s->end && *s->p == close) {
        s->p++;
        return 0;
    }
    for (;;) {
        if (is_object) {
            dq_event_span name;

            if (s->p >= s->end || *s->p != '"' || scan_string(s, &name) != 0 ||
                n == SCAN_MAX_MEMBERS)
                return -1;
            for (size_t i = 0; i < n; i++)
                if (span_same(names[i], name))
                    return -1;
            names[n++] = name;
            scan_ws(s);
            if (s->p >= s->end || *s->p != ':')
                return -1;
            s->p++;
            scan_ws(s);
        }
        if (scan_value(s, depth) != 0)
            return -1;
        scan_ws(s);
        if (s->p >= s->end)
            return -1;
        if (*s->p == close) {
            s->p++;
            return 0;
        }
        if (*s->p != ',')
            return -1;
        s->p++;
        scan_ws(s);
    }
}

/* Any value at s->p (no whitespace before it); depth is that of the enclosing container. */
static int scan_value(scanner *s, int depth)
{
    dq_event_span ignored;
    int is_int;

    if (s->p >= s->end)
        return -1;
    switch (*s->p) {
    case '{':
    case '[':
        return scan_container(s, depth + 1);
    case '"':
        return scan_string(s, &ignored);
    case 't':
        return scan_literal(s, "true", 4);
    case 'f':
        return scan_literal(s, "false", 5);
    case 'n':
        return scan_literal(s, "null", 4);
    default:
        return scan_number(s, &is_int);
    }
}

/* The members dq_event_decode reads, by name. */
typedef enum {
    M_SCHEMA, M_ID, M_TYPE, M_DEPLOYMENT_ID, M_SERVICE, M_ENVIRONMENT, M_VERSION, M_AT,
    M_ACTOR, M_FENCE, M_DATA, M_OTHER
} member;

static member member_of(dq_event_span name)
{
    const char *p = name.p;

    /* by length, then a memcmp of a constant size the compiler inlines */
    switch (name.n) {
    case 2:
        return memcmp(p, "id", 2) == 0 ? M_ID : memcmp(p, "at", 2) == 0 ? M_AT : M_OTHER;
    case 4:
        return memcmp(p, "type", 4) == 0 ? M_TYPE : memcmp(p, "data", 4) == 0 ? M_DATA : M_OTHER;
    case 5:
        return memcmp(p, "actor", 5) == 0   ? M_ACTOR
               : memcmp(p, "fence", 5) == 0 ? M_FENCE
                                            : M_OTHER;
    case 6:
        return memcmp(p, "schema", 6) == 0 ? M_SCHEMA : M_OTHER;
    case 7:
        return memcmp(p, "service", 7) == 0   ? M_SERVICE
               : memcmp(p, "version", 7) == 0 ? M_VERSION
                                              : M_OTHER;
    case 11:
        return memcmp(p, "environment", 11) == 0 ? M_ENVIRONMENT : M_OTHER;
    case 13:
        return memcmp(p, "deployment_id", 13) == 0 ? M_DEPLOYMENT_ID : M_OTHER;
    default:
        return M_OTHER;
    }
}

/* dq_time_parse() of the canonical form "YYYY-MM-DDTHH:MM:SS.mmmZ" (dq_time_format's, what
 * every stored event has) without timegm: days from the civil date (proleptic Gregorian,
 * as timegm). 0 with *ms set; -1 for any other text, which dq_time_parse then reads. */
static int canonical_time(dq_event_span sp, int64_t *ms)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const char *p = sp.p;
    int v[24];

    if (sp.n != sizeof shape - 1)
        return -1;
    for (size_t i = 0; i < sizeof shape - 1; i++) {
        if (shape[i] == 'd') {
            if (p[i] < '0' || p[i] > '9')
                return -1;
            v[i] = p[i] - '0';
        } else if (p[i] != shape[i]) {
            return -1;
        }
    }
    int64_t y = v[0] * 1000 + v[1] * 100 + v[2] * 10 + v[3];
    int mon = v[5] * 10 + v[6], day = v[8] * 10 + v[9];
    int hour = v[11] * 10 + v[12], min = v[14] * 10 + v[15], sec = v[17] * 10 + v[18];
    int frac = v[20] * 100 + v[21] * 10 + v[22];
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

    /* a leap second (sec 60) is left to dq_time_parse, which lets timegm carry it */
    if (mon < 1 || mon > 12 || day < 1 || day > (mon == 2 && leap ? 29 : mdays[mon - 1]) ||
        hour > 23 || min > 59 || sec > 59)
        return -1;
    /* days from 1970-01-01 (H. Hinnant's days_from_civil) */
    y -= mon <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (mon + (mon > 2 ? -3 : 9)) + 2) / 5 + day - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = era * 146097 + doe - 719468;

    *ms = ((days * 24 + hour) * 60 + min) * 60000 + (int64_t)sec * 1000 + frac;
    return 0;
}

/* dq_uuid_valid() on a span: 36 bytes, hyphens at 8, 13, 18, 23, lower-case hex elsewhere. */
static int span_uuid_valid(dq_event_span sp)
{
    if (sp.p == NULL || sp.n != DQ_UUID_LEN)
        return 0;
    for (size_t i = 0; i < DQ_UUID_LEN; i++) {
        char c = sp.p[i];

        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return 0;
        } else if (!(c >= '0' && c <= '9') && !(c >= 'a' && c <= 'f')) {
            return 0;
        }
    }
    return 1;
}

/* A NUL-terminated copy of a short span into buf[cap]; -1 when it does not fit. */
static int span_copy(dq_event_span sp, char *buf, size_t cap)
{
    if (sp.n >= cap)
        return -1;
    memcpy(buf, sp.p, sp.n);
    buf[sp.n] = '\0';
    return 0;
}

int dq_event_span_eq(dq_event_span sp, const char *s)
{
    size_t n = strlen(s);

    return sp.p != NULL && sp.n == n && memcmp(sp.p, s, n) == 0;
}

int dq_event_peek(const char *buf, size_t len, const char *name, dq_event_span *value)
{
    scanner s = {buf, buf + len};
    size_t want = strlen(name);

    value->p = NULL;
    value->n = 0;
    if (buf == NULL || len > DQ_JSON_MAX_BYTES_DEFAULT)
        return 0;
    scan_ws(&s);
    if (s.p >= s.end || *s.p != '{')
        return 0;
    s.p++;
    for (;;) {
        dq_event_span key;

        scan_ws(&s);
        if (s.p >= s.end || *s.p != '"' || scan_string(&s, &key) != 0)
            return 0;
        scan_ws(&s);
        if (s.p >= s.end || *s.p != ':')
            return 0;
        s.p++;
        scan_ws(&s);
        if (s.p >= s.end)
            return 0;
        if (key.n == want && memcmp(key.p, name, want) == 0) {
            if (*s.p != '"')
                return 2;
            return scan_string(&s, value) == 0 ? 1 : 0;
        }
        if (scan_value(&s, 1) != 0)
            return 0;
        scan_ws(&s);
        if (s.p >= s.end || *s.p != ',')
            return 0; /* the end of the object, or no JSON, before name */
        s.p++;
    }
}

int dq_event_scan(const char *buf, size_t len, dq_event_view *out)
{
    scanner s = {buf, buf + len};
    dq_event_span names[SCAN_MAX_MEMBERS];
    dq_event_span schema = {0}, at = {0}, fence = {0};
    dq_event_span *strings[M_OTHER] = {
        [M_SCHEMA] = &schema,      [M_ID] = &out->id,
        [M_TYPE] = &out->type,     [M_DEPLOYMENT_ID] = &out->deployment_id,
        [M_SERVICE] = &out->service, [M_ENVIRONMENT] = &out->environment,
        [M_VERSION] = &out->version, [M_AT] = &at,
        [M_ACTOR] = &out->actor,
    };
    size_t n = 0;
    unsigned seen = 0;
    char tmp[64];
    double fence_d;

    memset(out, 0, sizeof *out);
    if (buf == NULL || len == 0 || len > DQ_JSON_MAX_BYTES_DEFAULT)
        return 0;
    scan_ws(&s);
    if (s.p >= s.end || *s.p != '{')
        return 0;
    s.p++;
    scan_ws(&s);
    if (s.p < s.end && *s.p == '}')
        return 0; /* {}: no schema */
    for (;;) {
        dq_event_span name, value;
        member m;
        const char *start;
        int is_int;

        if (s.p >= s.end || *s.p != '"' || scan_string(&s, &name) != 0)
            return 0;
        /* a duplicate: of a known member by the mask, of another one by its name */
        m = member_of(name);
        if (m != M_OTHER) {
            if (seen & (1u << m))
                return 0;
            seen |= 1u << m;
        } else {
            if (n == SCAN_MAX_MEMBERS)
                return 0;
            for (size_t i = 0; i < n; i++)
                if (span_same(names[i], name))
                    return 0;
            names[n++] = name;
        }
        scan_ws(&s);
        if (s.p >= s.end || *s.p != ':')
            return 0;
        s.p++;
        scan_ws(&s);
        if (s.p >= s.end)
            return 0;
        start = s.p;
        if (m == M_FENCE) {
            if (scan_number(&s, &is_int) != 0 || !is_int)
                return 0;
            fence = (dq_event_span){start, (size_t)(s.p - start)};
        } else if (m == M_DATA) {
            if (*s.p != '{' || scan_container(&s, 2) != 0)
                return 0;
            out->data = (dq_event_span){start, (size_t)(s.p - start)};
        } else if (m != M_OTHER && *s.p == '"') {
            if (scan_string(&s, &value) != 0)
                return 0;
            *strings[m] = value;
        } else if (m != M_OTHER && m != M_DEPLOYMENT_ID && m != M_SERVICE &&
                   m != M_ENVIRONMENT && m != M_VERSION && m != M_ACTOR) {
            return 0; /* a required string that is not one */
        } else if (m != M_OTHER) {
            if (scan_literal(&s, "null", 4) != 0)
                return 0; /* an optional string that is neither a string nor null */
        } else if (scan_value(&s, 1) != 0) {
            return 0;
        }
        scan_ws(&s);
        if (s.p >= s.end)
            return 0;
        if (*s.p == '}')
            break;
        if (*s.p != ',')
            return 0;
        s.p++;
        scan_ws(&s);
    }
    s.p++;
    scan_ws(&s);
    if (s.p != s.end)
        return 0;

    /* The checks of dq_event_decode, on the same values. */
    if (!dq_event_span_eq(schema, DQ_EVENT_SCHEMA))
        return 0;
    if (!span_uuid_valid(out->id))
        return 0;
    if (out->type.p == NULL || out->type.n == 0)
        return 0;
    if (at.p == NULL || (canonical_time(at, &out->at_ms) != 0 &&
                         (span_copy(at, tmp, sizeof tmp) != 0 ||
                          dq_time_parse(tmp, &out->at_ms) != 0)))
        return 0;
    /* An integer text, read as cJSON reads it: strtod (no decimal point, so no locale), or
     * for up to 15 digits the exact value strtod gives, without it. */
    if (fence.p == NULL)
        return 0;
    if (fence.n <= 15 && fence.p[0] != '-') {
        int64_t f = 0;

        for (size_t i = 0; i < fence.n; i++)
            f = f * 10 + (fence.p[i] - '0');
        fence_d = (double)f;
    } else if (span_copy(fence, tmp, sizeof tmp) == 0) {
        fence_d = strtod(tmp, NULL);
    } else {
        return 0;
    }
    if (fence_d < 0 || fence_d > 9007199254740992.0 || fence_d != (double)(int64_t)fence_d)
        return 0;
    out->fence = (int64_t)fence_d;
    if (out->data.p == NULL)
        return 0;
    return 1;
}

char *dq_target_key(const char *service, const char *environment, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/%s", service != NULL ? service : "",
             environment != NULL ? environment : "");
    return out;
}

void dq_request_free(dq_request *r)
{
    if (r == NULL)
        return;
    free(r->deployment_id);
    free(r->service);
    free(r->environment);
    free(r->version);
    free(r->strategy);
    free(r->commit_at);
    free(r->requested_by);
    free(r->ci_run_url);
    free(r->nonce);
    free(r->issued_at);
    free(r);
}

char *dq_request_encode(const dq_request *r)
{
    char *text = NULL;

    if (r == NULL)
        return NULL;
    cJSON *obj = cJSON_CreateObject();
    if (obj == NULL)
        return NULL;
    if (add_opt(obj, "schema", DQ_REQUEST_SCHEMA) ||
        add_opt(obj, "deployment_id", r->deployment_id) || add_opt(obj, "service", r->service) ||
        add_opt(obj, "environment", r->environment) || add_opt(obj, "version", r->version) ||
        add_opt(obj, "strategy", r->strategy) || add_opt(obj, "commit_at", r->commit_at) ||
        add_opt(obj, "requested_by", r->requested_by) ||
        add_opt(obj, "ci_run_url", r->ci_run_url) || add_opt(obj, "nonce", r->nonce) ||
        add_opt(obj, "issued_at", r->issued_at))
        goto done;
    text = cJSON_PrintUnformatted(obj);

done:
    cJSON_Delete(obj);
    return text;
}

dq_request *dq_request_from_json(const cJSON *obj)
{
    dq_request *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;

    int ok = 1;
    r->deployment_id = dup_opt(dq_json_str(obj, "deployment_id"), &ok);
    r->service = dup_opt(dq_json_str(obj, "service"), &ok);
    r->environment = dup_opt(dq_json_str(obj, "environment"), &ok);
    r->version = dup_opt(dq_json_str(obj, "version"), &ok);
    r->strategy = dup_opt(dq_json_str(obj, "strategy"), &ok);
    r->commit_at = dup_opt(dq_json_str(obj, "commit_at"), &ok);
    r->requested_by = dup_opt(dq_json_str(obj, "requested_by"), &ok);
    r->ci_run_url = dup_opt(dq_json_str(obj, "ci_run_url"), &ok);
    r->nonce = dup_opt(dq_json_str(obj, "nonce"), &ok);
    r->issued_at = dup_opt(dq_json_str(obj, "issued_at"), &ok);
    if (!ok)
        goto fail;
    return r;

fail:
    dq_request_free(r);
    return NULL;
}
