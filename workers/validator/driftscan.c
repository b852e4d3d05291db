/*
 * driftscan.c - the periodic drift scan: compare each environment's variables with its
 * `requires` environment's and with its own at its last deploy, emit drift.detected once
 * per new drift. See driftscan.h.
 */
#include "driftscan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "gates.h"
#include "json.h"
#include "lock.h"
#include "log.h"
#include "util.h"

#define LOCK_SERVICE "_drift" /* not a valid service name: no target's lease is ever this */
#define LOCK_ENV "scan"
#define DUE_KEY "deployq:drift:scan-due"

char *dq_driftscan_last_key(const char *service, const char *env, char *out, size_t outlen)
{
    snprintf(out, outlen, "deployq:drift:last:%s:%s", service, env);
    return out;
}

static cJSON *names_array(const char *const *v, size_t n)
{
    cJSON *a = cJSON_CreateArray();

    for (size_t i = 0; a && i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(v[i]));
    return a;
}

/* What changed since the recorded set: differs and missing and extra, as one sorted list
 * of names (borrowed from d). */
static size_t changed_names(const dq_drift_diff *d, const char **out)
{
    size_t n = 0;

    for (size_t i = 0; i < d->n_differs; i++)
        out[n++] = d->differs[i];
    for (size_t i = 0; i < d->n_missing; i++)
        out[n++] = d->missing[i];
    for (size_t i = 0; i < d->n_extra; i++)
        out[n++] = d->extra[i];
    return n;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Compare one target. 1 emitted, 0 nothing to say, -1 Redis or broker failed. */
static int scan_target(dq_validator *val, const char *service, const dq_environment *e, int64_t now_ms)
{
    const dq_config *cfg = val->cfg;
    const dq_drift_key *k = &val->drift->key;
    dq_gates *g = NULL, *src = NULL;
    dq_drift_vars have = {0}, theirs = {0}, rec = {0};
    dq_drift_diff vs_src = {0}, vs_rec = {0};
    int has_src = 0, has_rec = 0, rc = 0;
    char err[512], key[512], digest[17], name[700], rec_version[160] = "", rec_key_id[17] = "";
    char *last = NULL, *recorded = NULL, changed_text[2048] = "";
    const char **changed = NULL;
    size_t n_changed = 0;
    int64_t rec_at = 0;
    dq_event *ev = NULL;

    g = dq_gates_load(cfg, service, e->name, err, sizeof err);
    if (!g || !dq_gates_can_read_vars(g))
        goto out;
    if (e->requires && (src = dq_gates_load(cfg, service, e->requires, err, sizeof err)) != NULL &&
        !dq_gates_can_read_vars(src)) {
        dq_gates_free(src);
        src = NULL;
    }
    if (k->persistent) {
        dq_drift_record_key(service, e->name, key, sizeof key);
        if (dq_redis_get(val->redis, key, &recorded) != 0) {
            rc = -1;
            goto out;
        }
    }
    if (!src && !recorded)
        goto out; /* nothing to compare with */
    if (dq_gates_read_hashed(g, k, &have, err, sizeof err) != 0) {
        dq_warn("drift scan: %s: %s", g->target, err);
        goto out;
    }
    if (src) {
        if (dq_gates_read_hashed(src, k, &theirs, err, sizeof err) != 0) {
            dq_warn("drift scan: %s: %s", src->target, err);
            goto out;
        }
        if (dq_drift_compare(&have, &theirs, g, &vs_src) != 0)
            goto out;
        has_src = 1;
    }
    if (recorded && dq_drift_record_parse(recorded, &rec, &rec_at, rec_version, sizeof rec_version,
                                          rec_key_id) == 0 &&
        strcmp(rec_key_id, k->id) == 0) { /* hashes under another key do not compare */
        if (dq_drift_compare(&have, &rec, NULL, &vs_rec) != 0)
            goto out;
        has_rec = 1;
        changed = calloc(vs_rec.n_differs + vs_rec.n_missing + vs_rec.n_extra + 1, sizeof *changed);
        if (!changed)
            goto out;
        n_changed = changed_names(&vs_rec, changed);
        qsort(changed, n_changed, sizeof *changed, by_name);
        dq_drift_join(changed, n_changed, changed_text, sizeof changed_text);
    }
    dq_driftscan_last_key(service, e->name, key, sizeof key);
    if (dq_redis_get(val->redis, key, &last) != 0) {
        rc = -1;
        goto out;
    }
    if (!(has_src && dq_drift_diff_drifted(&vs_src)) && n_changed == 0) {
        /* clean: remember it, so that the same drift coming back is reported again */
        if (last && strncmp(last, "clean@", 6) != 0) {
            redisReply *rep = dq_redis_command(val->redis, "SET %s clean@%lld", key, (long long)now_ms);

            rc = rep && rep->type != REDIS_REPLY_ERROR ? 0 : -1;
            if (rep)
                freeReplyObject(rep);
        }
        goto out;
    }
    {
        dq_drift_diff none = {0};

        dq_drift_diff_digest(has_src ? &vs_src : &none, changed_text, digest);
    }
    if (last && strcmp(last, digest) == 0)
        goto out; /* reported already */
    ev = dq_event_new(DQ_EV_DRIFT_DETECTED, NULL, service, e->name, NULL, val->actor);
    if (!ev) {
        rc = -1;
        goto out;
    }
    snprintf(name, sizeof name, "drift.detected:%s/%s:%s:%s", service, e->name, last ? last : "-", digest);
    dq_event_set_id_from(ev, name);
    cJSON_AddStringToObject(ev->data, "digest", digest);
    if (has_src) {
        cJSON_AddStringToObject(ev->data, "against", e->requires);
        cJSON_AddItemToObject(ev->data, "missing", names_array(vs_src.missing, vs_src.n_missing));
        cJSON_AddItemToObject(ev->data, "differs", names_array(vs_src.differs, vs_src.n_differs));
        cJSON_AddItemToObject(ev->data, "allowed", names_array(vs_src.allowed, vs_src.n_allowed));
    }
    if (has_rec && n_changed > 0) {
        cJSON *c = cJSON_AddObjectToObject(ev->data, "since_deploy");
        char at[DQ_TIME_LEN + 1];

        if (c) {
            if (rec_version[0])
                cJSON_AddStringToObject(c, "version", rec_version);
            cJSON_AddStringToObject(c, "recorded_at", dq_time_format(rec_at, at));
            cJSON_AddItemToObject(c, "changed", names_array(changed, n_changed));
        }
    }
    if (dq_validator_emit(val, ev, err, sizeof err) != 0) {
        dq_warn("drift scan: %s: drift.detected not sent: %s", g->target, err);
        rc = -1;
        goto out;
    }
    dq_info("drift scan: %s: drift.detected (%zu missing, %zu differ, %zu changed since its deploy)", g->target,
            has_src ? vs_src.n_missing : 0, has_src ? vs_src.n_differs : 0, n_changed);
    {
        redisReply *rep = dq_redis_command(val->redis, "SET %s %s", key, digest);

        /* not recorded: the next scan sends the same event again (same id) */
        if (rep)
            freeReplyObject(rep);
    }
    rc = 1;
out:
    dq_event_free(ev);
    free(changed);
    free(last);
    free(recorded);
    dq_drift_diff_clear(&vs_src);
    dq_drift_diff_clear(&vs_rec);
    dq_drift_vars_clear(&have);
    dq_drift_vars_clear(&theirs);
    dq_drift_vars_clear(&rec);
    dq_gates_free(src);
    dq_gates_free(g);
    return rc;
}

int dq_driftscan_pass(dq_validator *val, int64_t now_ms)
{
    const dq_config *cfg = val->cfg;
    int n = 0, failed = 0;

    for (size_t i = 0; i < cfg->n_services; i++)
        for (size_t j = 0; j < cfg->services[i].n_envs; j++) {
            int r = scan_target(val, cfg->services[i].name, &cfg->services[i].envs[j], now_ms);

            if (r < 0)
                failed = 1;
            else
                n += r;
        }
    return failed ? -1 : n;
}

int dq_driftscan_run(dq_validator *val, int64_t now_ms)
{
    const dq_config *cfg = val->cfg;
    int64_t interval = val->drift->scan_interval_ms;
    dq_lock *lock = NULL;
    dq_lock_status ls;
    redisReply *rep;
    char err[512];
    int turn, n;

    rep = dq_redis_command(val->redis, "SET " DUE_KEY " %s NX PX %lld", val->actor,
                           (long long)(interval > 1000 ? interval - 500 : interval));
    if (!rep)
        return -1;
    turn = rep->type == REDIS_REPLY_STATUS;
    freeReplyObject(rep);
    if (!turn)
        return 0; /* another instance scans this interval */
    ls = dq_lock_try(cfg->redis_url, cfg->redis_timeout_ms, LOCK_SERVICE, LOCK_ENV, 0, &lock, err, sizeof err);
    if (ls == DQ_LOCK_BUSY)
        return 0; /* a scan of an earlier interval still runs */
    if (ls != DQ_LOCK_TAKEN) {
        dq_warn("drift scan: lock: %s", err);
        return -1;
    }
    n = dq_driftscan_pass(val, now_ms);
    dq_lock_release(lock);
    return n;
}
