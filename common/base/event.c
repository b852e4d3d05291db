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
