/*
 * pending.c - reading the deployments that wait for approval (see pending.h).
 */
#include "pending.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "json.h"
#include "util.h"

#define LIST_MAX 10000

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void pending_clear(dq_pending *p)
{
    free(p->deployment_id);
    free(p->service);
    free(p->environment);
    free(p->version);
    free(p->key_id);
    free(p->requested_by);
    memset(p, 0, sizeof *p);
}

void dq_pending_list_free(dq_pending *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        pending_clear(&list[i]);
    free(list);
}

/* Read one member of the expiry set into p. 1 waiting, 0 not (decided, gone, unreadable),
 * -1 Redis failed (err). */
static int read_one(dq_redis *r, const redisReply *member, int64_t expires_ms, dq_pending *p, char *err,
                    size_t errlen)
{
    cJSON *o = dq_json_parse(member->str, member->len, 4096, 4, NULL, NULL, 0);
    const char *dep = dq_json_str(o, "deployment_id");
    char key[128], buf[256], *text = NULL;
    dq_event *ev = NULL;
    redisReply *x;
    int rc = 0;

    if (!dep || !dq_uuid_valid(dep))
        goto out;
    snprintf(key, sizeof key, "%s%s", DQ_DECIDED_PREFIX, dep);
    x = dq_redis_command(r, "EXISTS %s", key);
    if (!x || x->type != REDIS_REPLY_INTEGER) {
        snprintf(err, errlen, "redis %s: %s", dq_redis_where(r),
                 x && x->type == REDIS_REPLY_ERROR ? x->str : dq_redis_errstr(r));
        if (x)
            freeReplyObject(x);
        rc = -1;
        goto out;
    }
    rc = x->integer == 0;
    freeReplyObject(x);
    if (!rc)
        goto out;
    snprintf(key, sizeof key, "%s%s", DQ_PENDING_PREFIX, dep);
    if (dq_redis_get(r, key, &text) != 0) {
        snprintf(err, errlen, "redis %s: %s", dq_redis_where(r), dq_redis_errstr(r));
        rc = -1;
        goto out;
    }
    /* No record: its approval_timeout ran out while no validator was there to reject it
     * yet (the next one will), or the record is unreadable; neither can be approved. */
    ev = text ? dq_event_decode(text, strlen(text), buf, sizeof buf) : NULL;
    if (!ev) {
        rc = 0;
        goto out;
    }
    p->deployment_id = strdup(dep);
    p->service = dup_or_null(ev->service);
    p->environment = dup_or_null(ev->environment);
    p->version = dup_or_null(ev->version);
    p->key_id = dup_or_null(dq_json_str(ev->data, "key_id"));
    p->requested_by = dup_or_null(dq_json_str(ev->data, "requested_by"));
    p->since_ms = ev->at_ms;
    p->expires_ms = expires_ms;
    if (!p->deployment_id) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    }
out:
    dq_event_free(ev);
    free(text);
    cJSON_Delete(o);
    return rc;
}

int dq_pending_list(dq_redis *r, dq_pending **out, size_t *n, char *err, size_t errlen)
{
    redisReply *z = dq_redis_command(r, "ZRANGE %s 0 %d WITHSCORES", DQ_PENDING_EXPIRIES, LIST_MAX - 1);
    dq_pending *list = NULL;
    size_t count = 0, cap = 0;
    int rc = -1;

    *out = NULL;
    *n = 0;
    if (!z || z->type != REDIS_REPLY_ARRAY) {
        snprintf(err, errlen, "redis %s: %s", dq_redis_where(r),
                 z && z->type == REDIS_REPLY_ERROR ? z->str : dq_redis_errstr(r));
        goto out;
    }
    cap = z->elements / 2 + 1;
    list = calloc(cap, sizeof *list); /* zeroed: freeing every slot is safe */
    if (!list) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i + 1 < z->elements; i += 2) {
        const redisReply *m = z->element[i], *sc = z->element[i + 1];
        int got;

        if (m->type != REDIS_REPLY_STRING || sc->type != REDIS_REPLY_STRING)
            continue;
        got = read_one(r, m, strtoll(sc->str, NULL, 10), &list[count], err, errlen);
        if (got < 0)
            goto out;
        count += (size_t)got;
    }
    *out = list;
    *n = count;
    list = NULL;
    rc = 0;
out:
    dq_pending_list_free(list, cap);
    if (z)
        freeReplyObject(z);
    return rc;
}
