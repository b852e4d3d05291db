/*
 * opstate.c - operator marks in Redis (opstate.h): pause, hold, cancel.
 */
#include "opstate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "json.h"
#include "util.h"

static const char *const kind_word[] = {"paused", "held"};

static void target_mark_key(dq_opstate_kind kind, const char *service, const char *environment, char *out,
                            size_t outlen)
{
    char t[300];

    dq_target_key(service, environment, t, sizeof t);
    snprintf(out, outlen, "deployq:%s:%s", kind_word[kind], t);
}

static char *mark_json(const dq_opmark *mark)
{
    cJSON *o = cJSON_CreateObject();
    char *s = NULL;

    if (o && cJSON_AddStringToObject(o, "by", mark->by) && cJSON_AddStringToObject(o, "reason", mark->reason) &&
        cJSON_AddStringToObject(o, "at", mark->at))
        s = dq_json_print(o);
    cJSON_Delete(o);
    return s;
}

static int set_key(dq_redis *r, const char *key, const dq_opmark *mark, long ttl_s)
{
    char *json = mark_json(mark);
    redisReply *rep;
    int rc;

    if (!json)
        return -1;
    rep = ttl_s > 0 ? dq_redis_command(r, "SET %s %s EX %ld", key, json, ttl_s)
                    : dq_redis_command(r, "SET %s %s", key, json);
    rc = rep && rep->type == REDIS_REPLY_STATUS ? 0 : -1;
    if (rep)
        freeReplyObject(rep);
    free(json);
    return rc;
}

static int get_key(dq_redis *r, const char *key, dq_opmark *mark)
{
    char *text = NULL;
    cJSON *o;

    if (dq_redis_get(r, key, &text) != 0)
        return -1;
    if (!text)
        return 0;
    if (mark) {
        const char *s;

        memset(mark, 0, sizeof *mark);
        o = dq_json_parse(text, strlen(text), 8192, 4, NULL, NULL, 0);
        s = dq_json_str(o, "by");
        dq_strlcpy(mark->by, s ? s : "?", sizeof mark->by);
        s = dq_json_str(o, "reason");
        dq_strlcpy(mark->reason, s ? s : "", sizeof mark->reason);
        s = dq_json_str(o, "at");
        dq_strlcpy(mark->at, s ? s : "", sizeof mark->at);
        cJSON_Delete(o);
    }
    free(text);
    return 1;
}

int dq_opstate_set(dq_redis *r, dq_opstate_kind kind, const char *service, const char *environment,
                   const dq_opmark *mark)
{
    char key[400];

    target_mark_key(kind, service, environment, key, sizeof key);
    return set_key(r, key, mark, 0);
}

int dq_opstate_clear(dq_redis *r, dq_opstate_kind kind, const char *service, const char *environment)
{
    char key[400];
    redisReply *rep;
    int rc;

    target_mark_key(kind, service, environment, key, sizeof key);
    rep = dq_redis_command(r, "DEL %s", key);
    rc = rep && rep->type == REDIS_REPLY_INTEGER ? (rep->integer > 0) : -1;
    if (rep)
        freeReplyObject(rep);
    return rc;
}

int dq_opstate_get(dq_redis *r, dq_opstate_kind kind, const char *service, const char *environment,
                   dq_opmark *mark)
{
    char key[400];

    target_mark_key(kind, service, environment, key, sizeof key);
    return get_key(r, key, mark);
}

int dq_cancel_set(dq_redis *r, const char *deployment_id, const dq_opmark *mark)
{
    char key[128];

    snprintf(key, sizeof key, "deployq:cancel:%s", deployment_id);
    return set_key(r, key, mark, DQ_CANCEL_TTL_S);
}

int dq_cancel_get(dq_redis *r, const char *deployment_id, dq_opmark *mark)
{
    char key[128];

    snprintf(key, sizeof key, "deployq:cancel:%s", deployment_id);
    return get_key(r, key, mark);
}
