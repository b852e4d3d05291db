/*
 * fold.c - the state fold of fold.h: events in log order -> per-target state, deployment
 * timelines, rollbacks, stale-fence flags and a deterministic state hash.
 *
 * Targets and deployments are found through small open-addressing hash tables keyed by
 * string (a million events must fold in seconds); every record lives in its own
 * allocation so the pointers handed out stay valid while the tables grow.
 */
#include "fold.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "util.h"

/* ---- a string-keyed hash table of pointers -------------------------------------------- */

typedef struct {
    const char **keys; /* borrowed from the values */
    void **vals;
    size_t cap, n;
} strmap;

static uint64_t str_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */

    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static void *strmap_get(const strmap *m, const char *key)
{
    if (m->cap == 0)
        return NULL;
    for (size_t i = str_hash(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->keys[i])
            return NULL;
        if (strcmp(m->keys[i], key) == 0)
            return m->vals[i];
    }
}

static int strmap_put(strmap *m, const char *key, void *val)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 64;
        const char **nk = calloc(ncap, sizeof *nk);
        void **nv = calloc(ncap, sizeof *nv);

        if (!nk || !nv) {
            free(nk);
            free(nv);
            return -1;
        }
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->keys[i])
                continue;
            size_t j = str_hash(m->keys[i]) & (ncap - 1);
            while (nk[j])
                j = (j + 1) & (ncap - 1);
            nk[j] = m->keys[i];
            nv[j] = m->vals[i];
        }
        free(m->keys);
        free(m->vals);
        m->keys = nk;
        m->vals = nv;
        m->cap = ncap;
    }
    size_t i = str_hash(key) & (m->cap - 1);
    while (m->keys[i])
        i = (i + 1) & (m->cap - 1);
    m->keys[i] = key;
    m->vals[i] = val;
    m->n++;
    return 0;
}

static void strmap_free(strmap *m)
{
    free(m->keys);
    free(m->vals);
}

/* A growing array of pointers. */
typedef struct {
    void **v;
    size_t n, cap;
} ptrvec;

static int ptrvec_push(ptrvec *p, void *x)
{
    if (p->n == p->cap) {
        size_t ncap = p->cap ? p->cap * 2 : 16;
        void **nv = realloc(p->v, ncap * sizeof *nv);

        if (!nv)
            return -1;
        p->v = nv;
        p->cap = ncap;
    }
    p->v[p->n++] = x;
    return 0;
}

/* ---- the fold ---------------------------------------------------------------------------- */

struct dq_fold {
    strmap targets_by_key, deployments_by_id;
    ptrvec targets, deployments, rollbacks;
    dq_fold_stale_event *stale;
    size_t n_stale, cap_stale;
    dq_fold_target **sorted; /* dq_fold_targets() cache; NULL when out of date */
    dq_fold_totals totals;
    int no_timelines;        /* dq_fold_set_timelines(f, 0) */
    char *scratch;           /* dq_fold_apply's copy of a scanned record */
    size_t cap_scratch;
};

static const char unknown_type[] = "unknown";

/* The static copy of a type name, so timelines need no string of their own. */
static const char *intern_type(const char *type)
{
    for (size_t i = 0; dq_event_types[i]; i++)
        if (strcmp(dq_event_types[i], type) == 0)
            return dq_event_types[i];
    return unknown_type;
}

const char *dq_deploy_outcome_name(dq_deploy_outcome o)
{
    static const char *const names[] = {"pending",   "awaiting_approval", "validated",
                                        "running",   "succeeded",         "verified",
                                        "failed",    "rejected",          "rolled_back"};
    return (unsigned)o < sizeof names / sizeof names[0] ? names[o] : "unknown";
}

const char *dq_reject_kind_name(dq_reject_kind k)
{
    static const char *const names[] = {"", "gate", "invalid", "other"};
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "other";
}

/* The kind of one reason code (schemas/events/deploy.rejected.json); a code this table does
 * not know (added by a later version) is "other": never counted as a catch. */
static dq_reject_kind reject_code_kind(const char *code)
{
    static const char *const gate[] = {"freeze", "drift", "drift_values", "promotion", "denied", NULL};
    static const char *const invalid[] = {
        "too_large",      "too_deep",          "bad_json",        "schema",
        "bad_signature",  "missing_signature", "unknown_key",     "retired_key",
        "wrong_key_role", "stale",             "future",          "replayed_nonce",
        "approval_unsigned", "unknown_service", "unknown_environment", NULL};

    for (size_t i = 0; code && gate[i]; i++)
        if (strcmp(code, gate[i]) == 0)
            return DQ_REJECT_GATE;
    for (size_t i = 0; code && invalid[i]; i++)
        if (strcmp(code, invalid[i]) == 0)
            return DQ_REJECT_INVALID;
    return DQ_REJECT_OTHER;
}

/* The kind of a rejection: invalid when any reason is (a request that cannot be trusted
 * judged nothing), else gate when any reason is, else other. */
static dq_reject_kind reject_kind_of(const cJSON *data)
{
    const cJSON *reasons = cJSON_GetObjectItemCaseSensitive(data, "reasons"), *r;
    int gate = 0;

    cJSON_ArrayForEach(r, reasons) {
        dq_reject_kind rk = reject_code_kind(dq_json_str(r, "code"));

        if (rk == DQ_REJECT_INVALID)
            return DQ_REJECT_INVALID;
        gate |= rk == DQ_REJECT_GATE;
    }
    return gate ? DQ_REJECT_GATE : DQ_REJECT_OTHER;
}

const char *dq_rollback_status_name(dq_rollback_status s)
{
    static const char *const names[] = {"requested", "started", "succeeded", "failed"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "unknown";
}

const char *dq_canary_status_name(dq_canary_status s)
{
    static const char *const names[] = {"", "running", "promoted", "aborted"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "unknown";
}

dq_fold *dq_fold_new(void)
{
    return calloc(1, sizeof(dq_fold));
}

void dq_fold_set_timelines(dq_fold *f, int on)
{
    f->no_timelines = !on;
}

static void deployment_free(dq_fold_deployment *d)
{
    if (!d)
        return;
    free(d->id);
    free(d->service);
    free(d->environment);
    free(d->version);
    free(d->retry_of);
    free(d->timeline);
    free(d);
}

static void rollback_free(dq_fold_rollback *r)
{
    if (!r)
        return;
    free(r->service);
    free(r->environment);
    free(r->deployment_id);
    free(r->from_version);
    free(r->to_version);
    free(r->reason);
    free(r->requested_by);
    cJSON_Delete(r->evidence);
    free(r);
}

static void canary_clear(dq_fold_canary *c)
{
    free(c->deployment_id);
    free(c->version);
    free(c->canary_color);
    free(c->stable_color);
    free(c->reason);
    free(c->detail);
    memset(c, 0, sizeof *c);
}

static void target_free(dq_fold_target *t)
{
    if (!t)
        return;
    free(t->key);
    free(t->service);
    free(t->environment);
    free(t->current_version);
    free(t->current_deployment_id);
    free(t->last_verified_version);
    free(t->unknown_deployment_id);
    free(t->unknown_version);
    free(t->paused_by);
    free(t->paused_reason);
    free(t->held_by);
    free(t->held_reason);
    canary_clear(&t->canary);
    free(t);
}

void dq_fold_free(dq_fold *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->targets.n; i++)
        target_free(f->targets.v[i]);
    for (size_t i = 0; i < f->deployments.n; i++)
        deployment_free(f->deployments.v[i]);
    for (size_t i = 0; i < f->rollbacks.n; i++)
        rollback_free(f->rollbacks.v[i]);
    for (size_t i = 0; i < f->n_stale; i++) {
        free(f->stale[i].event_id);
        free(f->stale[i].type);
        free(f->stale[i].target);
        free(f->stale[i].deployment_id);
    }
    free(f->stale);
    free(f->targets.v);
    free(f->deployments.v);
    free(f->rollbacks.v);
    strmap_free(&f->targets_by_key);
    strmap_free(&f->deployments_by_id);
    free(f->sorted);
    free(f->scratch);
    free(f);
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Replace *slot with a copy of s (NULL clears). 0, -1 on allocation failure (unchanged). */
static int set_str(char **slot, const char *s)
{
    char *c = NULL;

    if (s && !(c = strdup(s)))
        return -1;
    free(*slot);
    *slot = c;
    return 0;
}

static dq_fold_target *target_find_or_add(dq_fold *f, const char *service, const char *env)
{
    char key[512];
    dq_fold_target *t;

    snprintf(key, sizeof key, "%s/%s", service, env);
    t = strmap_get(&f->targets_by_key, key);
    if (t)
        return t;
    t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->key = strdup(key);
    t->service = strdup(service);
    t->environment = strdup(env);
    if (!t->key || !t->service || !t->environment || ptrvec_push(&f->targets, t) != 0) {
        target_free(t);
        return NULL;
    }
    if (strmap_put(&f->targets_by_key, t->key, t) != 0) {
        f->targets.n--;
        target_free(t);
        return NULL;
    }
    free(f->sorted);
    f->sorted = NULL;
    f->totals.targets++;
    return t;
}

static dq_fold_deployment *deployment_find_or_add(dq_fold *f, const dq_event *ev)
{
    dq_fold_deployment *d = strmap_get(&f->deployments_by_id, ev->deployment_id);

    if (d)
        return d;
    d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->id = strdup(ev->deployment_id);
    d->service = dup_or_null(ev->service);
    d->environment = dup_or_null(ev->environment);
    d->version = dup_or_null(ev->version);
    d->first_at_ms = d->requested_at_ms = ev->at_ms;
    d->step = intern_type(ev->type);
    if (!d->id || (ev->service && !d->service) || (ev->environment && !d->environment) ||
        (ev->version && !d->version) || ptrvec_push(&f->deployments, d) != 0) {
        deployment_free(d);
        return NULL;
    }
    if (strmap_put(&f->deployments_by_id, d->id, d) != 0) {
        f->deployments.n--;
        deployment_free(d);
        return NULL;
    }
    f->totals.deployments++;
    return d;
}

static int timeline_add(dq_fold_deployment *d, const dq_event *ev, int32_t partition,
                        int64_t offset, int stale)
{
    if (d->n_timeline == d->cap_timeline) {
        size_t ncap = d->cap_timeline ? d->cap_timeline * 2 : 8;
        dq_fold_entry *nt = realloc(d->timeline, ncap * sizeof *nt);

        if (!nt)
            return -1;
        d->timeline = nt;
        d->cap_timeline = ncap;
    }
    d->timeline[d->n_timeline++] = (dq_fold_entry){
        .type = intern_type(ev->type),
        .at_ms = ev->at_ms,
        .partition = partition,
        .offset = offset,
        .fence = ev->fence,
        .stale = stale,
    };
    return 0;
}

static int stale_add(dq_fold *f, const dq_event *ev, const dq_fold_target *t,
                     int32_t partition, int64_t offset)
{
    dq_fold_stale_event *s;

    if (f->n_stale == f->cap_stale) {
        size_t ncap = f->cap_stale ? f->cap_stale * 2 : 8;
        dq_fold_stale_event *ns = realloc(f->stale, ncap * sizeof *ns);

        if (!ns)
            return -1;
        f->stale = ns;
        f->cap_stale = ncap;
    }
    s = &f->stale[f->n_stale];
    *s = (dq_fold_stale_event){
        .event_id = strdup(ev->id),
        .type = strdup(ev->type),
        .target = strdup(t->key),
        .deployment_id = dup_or_null(ev->deployment_id),
        .partition = partition,
        .offset = offset,
        .fence = ev->fence,
        .newest_fence = t->max_fence,
        .at_ms = ev->at_ms,
    };
    if (!s->event_id || !s->type || !s->target || (ev->deployment_id && !s->deployment_id)) {
        free(s->event_id);
        free(s->type);
        free(s->target);
        free(s->deployment_id);
        return -1;
    }
    f->n_stale++;
    return 0;
}

/* A time member of obj parsed to ms, or 0 when absent or not a time. */
static int64_t json_time(const cJSON *obj, const char *name)
{
    const char *s = obj ? dq_json_str(obj, name) : NULL;
    int64_t ms;

    return s && dq_time_parse(s, &ms) == 0 ? ms : 0;
}

static dq_fold_rollback *rollback_open(dq_fold *f, dq_fold_target *t, const dq_event *ev)
{
    dq_fold_rollback *r = calloc(1, sizeof *r);

    if (!r)
        return NULL;
    r->service = strdup(t->service);
    r->environment = strdup(t->environment);
    r->deployment_id = dup_or_null(ev->deployment_id);
    r->from_version = dup_or_null(ev->version ? ev->version : t->current_version);
    if (!r->service || !r->environment || (ev->deployment_id && !r->deployment_id) ||
        ptrvec_push(&f->rollbacks, r) != 0) {
        rollback_free(r);
        return NULL;
    }
    t->last_rollback = r;
    t->n_rollbacks++;
    f->totals.rollbacks++;
    return r;
}

/* The deployment's cost from a terminal event's data.cost; without one, what was known
 * stays (a redelivered terminal event is the same event). */
static void cost_read(dq_fold_deployment *d, const cJSON *data)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(data, "cost");
    const char *basis = dq_json_str(c, "basis");
    const cJSON *amount = cJSON_GetObjectItemCaseSensitive(c, "amount");

    if (!basis)
        return;
    if (strcmp(basis, "provider_jobs") == 0 || strcmp(basis, "wall_time") == 0) {
        if (!cJSON_IsNumber(amount) || !(amount->valuedouble >= 0)) {
            d->cost = DQ_FOLD_COST_UNKNOWN;
            return;
        }
        d->cost = basis[0] == 'p' ? DQ_FOLD_COST_PROVIDER : DQ_FOLD_COST_ESTIMATE;
        d->cost_amount = amount->valuedouble;
    } else {
        d->cost = DQ_FOLD_COST_UNKNOWN;
    }
}

/* What runs on the target is known again (a deploy or a rollback succeeded). */
static void unknown_clear(dq_fold_target *t)
{
    free(t->unknown_deployment_id);
    free(t->unknown_version);
    t->unknown_deployment_id = t->unknown_version = NULL;
    t->unknown_since_ms = 0;
}

/* An operator's mark on the target (a pause or a hold) from its event's data: set with the
 * key (data.by, else the actor), the reason and the time; cleared with on 0. 0, -1 on
 * allocation failure. */
static int mark_set(char **by, char **reason, int64_t *since_ms, int on, const dq_event *ev)
{
    const char *who = dq_json_str(ev->data, "by");

    if (!on) {
        free(*by);
        free(*reason);
        *by = *reason = NULL;
        *since_ms = 0;
        return 0;
    }
    if (!who)
        who = ev->actor ? ev->actor : "-";
    if (set_str(by, who) != 0 || set_str(reason, dq_json_str(ev->data, "reason")) != 0)
        return -1;
    *since_ms = ev->at_ms;
    return 0;
}

/* An integer member of data (a JSON number), or dflt when absent or not a number. */
static int json_int(const cJSON *data, const char *name, int dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(data, name);

    return cJSON_IsNumber(v) ? v->valueint : dflt;
}

/* A canary.step/promoted/aborted on the target's canary (a new deployment's first canary
 * event starts it afresh) and on the deployment's maximum weight. 0, -1 on allocation
 * failure. */
static int canary_apply(dq_fold_target *t, dq_fold_deployment *d, const char *type,
                        const dq_event *ev)
{
    dq_fold_canary *c = &t->canary;
    const cJSON *data = ev->data;
    int weight;

    if (c->status != DQ_CANARY_NONE &&
        (!ev->deployment_id || !c->deployment_id || strcmp(ev->deployment_id, c->deployment_id) != 0))
        canary_clear(c);
    if (!c->deployment_id && ev->deployment_id && set_str(&c->deployment_id, ev->deployment_id) != 0)
        return -1;
    if (ev->version && set_str(&c->version, ev->version) != 0)
        return -1;
    if ((dq_json_str(data, "canary_color") &&
         set_str(&c->canary_color, dq_json_str(data, "canary_color")) != 0) ||
        (dq_json_str(data, "stable_color") &&
         set_str(&c->stable_color, dq_json_str(data, "stable_color")) != 0))
        return -1;
    c->steps = json_int(data, "steps", c->steps);
    c->since_ms = ev->at_ms;
    if (strcmp(type, DQ_EV_CANARY_PROMOTED) == 0) {
        c->status = DQ_CANARY_PROMOTED;
        c->step = c->steps;
        c->weight = 100;
    } else {
        c->status = strcmp(type, DQ_EV_CANARY_STEP) == 0 ? DQ_CANARY_RUNNING : DQ_CANARY_ABORTED;
        c->step = json_int(data, "step", c->step);
        c->weight = json_int(data, "weight", c->weight);
    }
    if (c->status == DQ_CANARY_ABORTED &&
        (set_str(&c->reason, dq_json_str(data, "reason")) != 0 ||
         set_str(&c->detail, dq_json_str(data, "detail")) != 0))
        return -1;
    if (!d)
        return 0;
    weight = json_int(data, "max_weight", c->weight);
    if (c->weight > weight)
        weight = c->weight;
    if (c->status != DQ_CANARY_PROMOTED && weight > d->canary_max_weight)
        d->canary_max_weight = weight;
    if (c->status == DQ_CANARY_ABORTED)
        d->canary_aborted = 1;
    return 0;
}

/* Ends the target's in-flight deployment when it is d. */
static void inflight_end(dq_fold_target *t, const dq_fold_deployment *d)
{
    if (d && t->inflight == d)
        t->inflight = NULL;
}

/* Apply one event of a known target (fence already checked). 0, -1 on allocation failure. */
static int apply_to_target(dq_fold *f, dq_fold_target *t, dq_fold_deployment *d,
                           const dq_event *ev)
{
    const char *type = intern_type(ev->type);
    const cJSON *data = ev->data;
    dq_fold_rollback *r = t->last_rollback;
    int open_rb = r && (r->status == DQ_ROLLBACK_REQUESTED || r->status == DQ_ROLLBACK_STARTED);

    if (d) {
        d->last_at_ms = ev->at_ms;
        if (ev->fence > d->fence)
            d->fence = ev->fence;
        if (!d->version && ev->version && !(d->version = strdup(ev->version)))
            return -1;
        if (strcmp(type, DQ_EV_NOTIFICATION_SENT) != 0 &&
            strcmp(type, DQ_EV_NOTIFICATION_FAILED) != 0 && strcmp(type, unknown_type) != 0)
            d->step = type;
    }

    /* A retry (deployq retry) names the deployment it retries in its verdict's data. */
    if (d && !d->retry_of &&
        (strcmp(type, DQ_EV_VALIDATED) == 0 || strcmp(type, DQ_EV_AWAITING_APPROVAL) == 0 ||
         strcmp(type, DQ_EV_REJECTED) == 0) &&
        dq_json_str(data, "retry_of") && set_str(&d->retry_of, dq_json_str(data, "retry_of")) != 0)
        return -1;

    if (strcmp(type, DQ_EV_VALIDATED) == 0 || strcmp(type, DQ_EV_AWAITING_APPROVAL) == 0) {
        if (strcmp(type, DQ_EV_VALIDATED) == 0)
            t->n_validated++;
        else
            t->n_awaiting++;
        if (d) {
            if (strcmp(type, DQ_EV_VALIDATED) == 0) {
                int64_t issued = json_time(data, "issued_at");

                d->validated_at_ms = ev->at_ms;
                d->commit_at_ms = json_time(data, "commit_at");
                if (issued)
                    d->requested_at_ms = issued;
                if (d->outcome < DQ_DEPLOY_VALIDATED)
                    d->outcome = DQ_DEPLOY_VALIDATED;
            } else if (d->outcome < DQ_DEPLOY_AWAITING_APPROVAL) {
                d->outcome = DQ_DEPLOY_AWAITING_APPROVAL;
            }
            t->inflight = d;
        }
    } else if (strcmp(type, DQ_EV_TARGET_PAUSED) == 0 || strcmp(type, DQ_EV_TARGET_RESUMED) == 0) {
        if (mark_set(&t->paused_by, &t->paused_reason, &t->paused_since_ms,
                     strcmp(type, DQ_EV_TARGET_PAUSED) == 0, ev) != 0)
            return -1;
    } else if (strcmp(type, DQ_EV_TARGET_HELD) == 0 || strcmp(type, DQ_EV_TARGET_RELEASED) == 0) {
        if (mark_set(&t->held_by, &t->held_reason, &t->held_since_ms,
                     strcmp(type, DQ_EV_TARGET_HELD) == 0, ev) != 0)
            return -1;
    } else if (strcmp(type, DQ_EV_CANARY_STEP) == 0 || strcmp(type, DQ_EV_CANARY_PROMOTED) == 0 ||
               strcmp(type, DQ_EV_CANARY_ABORTED) == 0) {
        if (canary_apply(t, d, type, ev) != 0)
            return -1;
    } else if (strcmp(type, DQ_EV_REJECTED) == 0) {
        t->n_rejected++;
        if (d) {
            d->outcome = DQ_DEPLOY_REJECTED;
            d->rejected_at_ms = ev->at_ms;
            d->reject_kind = reject_kind_of(data);
            inflight_end(t, d);
        }
    } else if (strcmp(type, DQ_EV_STARTED) == 0) {
        t->n_started++;
        if (d) {
            if (!d->started_at_ms)
                d->started_at_ms = ev->at_ms;
            if (d->outcome < DQ_DEPLOY_RUNNING)
                d->outcome = DQ_DEPLOY_RUNNING;
            t->inflight = d;
        }
    } else if (strcmp(type, DQ_EV_SUCCEEDED) == 0) {
        t->n_succeeded++;
        unknown_clear(t);
        if (set_str(&t->current_version, ev->version) != 0 ||
            set_str(&t->current_deployment_id, ev->deployment_id) != 0)
            return -1;
        t->current_since_ms = ev->at_ms;
        if (d) {
            const cJSON *watch = cJSON_GetObjectItemCaseSensitive(data, "watch");

            d->succeeded_at_ms = ev->at_ms;
            cost_read(d, data);
            if (d->outcome < DQ_DEPLOY_SUCCEEDED)
                d->outcome = DQ_DEPLOY_SUCCEEDED;
            /* No health watch follows (the executor said so): nothing else will conclude
             * it. Without the field (older events) a deploy.verified still may. */
            if (cJSON_IsFalse(watch)) {
                d->unwatched = 1;
                inflight_end(t, d);
            }
        }
    } else if (strcmp(type, DQ_EV_FAILED) == 0) {
        const char *outcome = dq_json_str(data, "outcome");

        t->n_failed++;
        if (outcome && strcmp(outcome, "unknown") == 0) {
            if (set_str(&t->unknown_deployment_id, ev->deployment_id) != 0 ||
                set_str(&t->unknown_version, ev->version) != 0)
                return -1;
            t->unknown_since_ms = ev->at_ms;
        }
        if (d) {
            d->failed_at_ms = ev->at_ms;
            cost_read(d, data);
            d->outcome = DQ_DEPLOY_FAILED;
            inflight_end(t, d);
        }
    } else if (strcmp(type, DQ_EV_VERIFIED) == 0) {
        t->n_verified++;
        if (set_str(&t->last_verified_version, ev->version) != 0)
            return -1;
        t->last_verified_at_ms = ev->at_ms;
        if (d) {
            d->verified_at_ms = ev->at_ms;
            if (d->outcome == DQ_DEPLOY_SUCCEEDED || d->outcome < DQ_DEPLOY_SUCCEEDED)
                d->outcome = DQ_DEPLOY_VERIFIED;
            inflight_end(t, d);
        }
    } else if (strcmp(type, DQ_EV_ROLLBACK_REQUESTED) == 0) {
        const cJSON *evidence = cJSON_GetObjectItemCaseSensitive(data, "evidence");

        r = rollback_open(f, t, ev);
        if (!r)
            return -1;
        r->requested_at_ms = ev->at_ms;
        if (set_str(&r->reason, dq_json_str(data, "reason")) != 0 ||
            set_str(&r->requested_by, dq_json_str(data, "requested_by")) != 0 ||
            set_str(&r->to_version, dq_json_str(data, "to_version")) != 0)
            return -1;
        if (cJSON_IsObject(evidence) && !(r->evidence = cJSON_Duplicate(evidence, 1)))
            return -1;
        r->detected_at_ms = json_time(evidence, "first_failure_at");
        if (!r->detected_at_ms)
            r->detected_at_ms = json_time(evidence, "detected_at");
        if (!r->detected_at_ms)
            r->detected_at_ms = ev->at_ms;
        if (d) {
            if (!d->rollback_requested_at_ms)
                d->rollback_requested_at_ms = ev->at_ms;
            d->outcome = DQ_DEPLOY_ROLLED_BACK;
            inflight_end(t, d);
        }
    } else if (strcmp(type, DQ_EV_ROLLBACK_STARTED) == 0 ||
               strcmp(type, DQ_EV_ROLLBACK_SUCCEEDED) == 0 ||
               strcmp(type, DQ_EV_ROLLBACK_FAILED) == 0) {
        if (!open_rb) {
            /* A rollback without a request (a manual one started directly) is still a
             * rollback of this target. */
            r = rollback_open(f, t, ev);
            if (!r)
                return -1;
        }
        if (dq_json_str(data, "to_version") &&
            set_str(&r->to_version, dq_json_str(data, "to_version")) != 0)
            return -1;
        if (dq_json_str(data, "from_version") &&
            set_str(&r->from_version, dq_json_str(data, "from_version")) != 0)
            return -1;
        /* No rollback.requested decided it (a canary abort: the executor did): the event
         * says who, why and since when. */
        if ((!r->requested_by && dq_json_str(data, "requested_by") &&
             set_str(&r->requested_by, dq_json_str(data, "requested_by")) != 0) ||
            (!r->reason && dq_json_str(data, "reason") &&
             set_str(&r->reason, dq_json_str(data, "reason")) != 0))
            return -1;
        if (!r->detected_at_ms)
            r->detected_at_ms = json_time(data, "detected_at");
        if (strcmp(type, DQ_EV_ROLLBACK_STARTED) == 0) {
            r->status = DQ_ROLLBACK_STARTED;
            r->started_at_ms = ev->at_ms;
        } else if (strcmp(type, DQ_EV_ROLLBACK_FAILED) == 0) {
            const char *policy = dq_json_str(data, "policy");

            r->status = DQ_ROLLBACK_FAILED;
            r->finished_at_ms = ev->at_ms;
            /* `rollback: notify`: nothing was attempted, a person was told; not a failure
             * of a rollback. */
            r->not_attempted = policy && strcmp(policy, "notify") == 0;
            if (!r->not_attempted)
                t->n_rollbacks_failed++;
        } else {
            int64_t restored = json_time(data, "restored_at");

            r->status = DQ_ROLLBACK_SUCCEEDED;
            r->finished_at_ms = ev->at_ms;
            r->restored_at_ms = restored ? restored : ev->at_ms;
            if (!r->detected_at_ms)
                r->detected_at_ms = json_time(data, "detected_at");
            if (!r->detected_at_ms)
                r->detected_at_ms = r->requested_at_ms ? r->requested_at_ms : r->restored_at_ms;
            t->n_rollbacks_succeeded++;
            unknown_clear(t);
            if (r->to_version) {
                if (set_str(&t->current_version, r->to_version) != 0)
                    return -1;
                /* The version now serving came from an older deployment that this log may
                 * not name; say "none" rather than keep the rolled-back one. */
                free(t->current_deployment_id);
                t->current_deployment_id = NULL;
                t->current_since_ms = r->restored_at_ms;
            }
        }
    }
    return 0;
}

int dq_fold_apply_event(dq_fold *f, const dq_event *ev, int32_t partition, int64_t offset)
{
    dq_fold_target *t;
    dq_fold_deployment *d = NULL;
    int stale;

    f->totals.events++;
    if (!ev->service || !ev->environment) {
        f->totals.untargeted++;
        return DQ_FOLD_APPLIED;
    }
    t = target_find_or_add(f, ev->service, ev->environment);
    if (!t)
        return DQ_FOLD_ENOMEM;
    stale = ev->fence > 0 && ev->fence < t->max_fence;
    /* A stale event joins the timeline of a deployment already known, but never makes one
     * up: a deployment only a lost lock holder speaks of did not happen. */
    if (ev->deployment_id) {
        d = stale ? strmap_get(&f->deployments_by_id, ev->deployment_id)
                  : deployment_find_or_add(f, ev);
        if (!d && !stale)
            return DQ_FOLD_ENOMEM;
    }
    if (d && !f->no_timelines && timeline_add(d, ev, partition, offset, stale) != 0)
        return DQ_FOLD_ENOMEM;
    if (stale) {
        t->n_stale++;
        f->totals.stale++;
        if (stale_add(f, ev, t, partition, offset) != 0)
            return DQ_FOLD_ENOMEM;
        return DQ_FOLD_STALE;
    }
    if (ev->fence > t->max_fence)
        t->max_fence = ev->fence;
    t->n_events++;
    t->last_event_at_ms = ev->at_ms;
    if (!f->totals.first_at_ms || ev->at_ms < f->totals.first_at_ms)
        f->totals.first_at_ms = ev->at_ms;
    if (ev->at_ms > f->totals.last_at_ms)
        f->totals.last_at_ms = ev->at_ms;
    if (apply_to_target(f, t, d, ev) != 0)
        return DQ_FOLD_ENOMEM;
    return DQ_FOLD_APPLIED;
}

/* 1 when apply_to_target reads the data of this type (see there); the others are folded
 * without decoding their data. */
static int type_reads_data(const char *type)
{
    return strcmp(type, DQ_EV_VALIDATED) == 0 || strcmp(type, DQ_EV_SUCCEEDED) == 0 ||
           strcmp(type, DQ_EV_REJECTED) == 0 || strcmp(type, DQ_EV_AWAITING_APPROVAL) == 0 ||
           strcmp(type, DQ_EV_TARGET_PAUSED) == 0 || strcmp(type, DQ_EV_TARGET_RESUMED) == 0 ||
           strcmp(type, DQ_EV_TARGET_HELD) == 0 || strcmp(type, DQ_EV_TARGET_RELEASED) == 0 ||
           strcmp(type, DQ_EV_FAILED) == 0 || strcmp(type, DQ_EV_ROLLBACK_REQUESTED) == 0 ||
           strcmp(type, DQ_EV_ROLLBACK_STARTED) == 0 ||
           strcmp(type, DQ_EV_ROLLBACK_SUCCEEDED) == 0 ||
           strcmp(type, DQ_EV_ROLLBACK_FAILED) == 0 || strcmp(type, DQ_EV_CANARY_STEP) == 0 ||
           strcmp(type, DQ_EV_CANARY_PROMOTED) == 0 || strcmp(type, DQ_EV_CANARY_ABORTED) == 0;
}

/* The string of a span as a pointer into f->scratch (a copy of the record), NUL-terminated
 * in place of its closing quote; NULL for an absent member. */
static char *scratch_str(dq_fold *f, const char *payload, dq_event_span sp)
{
    char *s;

    if (!sp.p)
        return NULL;
    s = f->scratch + (sp.p - payload);
    s[sp.n] = '\0';
    return s;
}

/* Fold a record dq_event_scan() was sure of: the event dq_event_decode() would have made,
 * built on the stack from a copy of the record. 1 when folded (*rc set), 0 to take the
 * decoding path instead. */
static int apply_scanned(dq_fold *f, const dq_event_view *v, const char *payload, size_t len,
                         int32_t partition, int64_t offset, int *rc)
{
    dq_event ev = {.at_ms = v->at_ms, .fence = v->fence};

    if (len + 1 > f->cap_scratch) {
        size_t ncap = len + 1 > 2 * f->cap_scratch ? len + 1 : 2 * f->cap_scratch;
        char *ns = realloc(f->scratch, ncap);

        if (!ns)
            return 0;
        f->scratch = ns;
        f->cap_scratch = ncap;
    }
    memcpy(f->scratch, payload, len);
    memcpy(ev.id, v->id.p, v->id.n); /* a valid UUID: DQ_UUID_LEN bytes */
    ev.id[v->id.n] = '\0';
    ev.type = scratch_str(f, payload, v->type);
    ev.deployment_id = scratch_str(f, payload, v->deployment_id);
    ev.service = scratch_str(f, payload, v->service);
    ev.environment = scratch_str(f, payload, v->environment);
    ev.version = scratch_str(f, payload, v->version);
    ev.actor = scratch_str(f, payload, v->actor);
    if (type_reads_data(ev.type)) {
        /* Strict JSON the scan checked: cJSON reads it as dq_event_decode would. */
        ev.data = cJSON_ParseWithLength(v->data.p, v->data.n);
        if (!ev.data)
            return 0;
    }
    *rc = dq_fold_apply_event(f, &ev, partition, offset);
    cJSON_Delete(ev.data);
    return 1;
}

int dq_fold_apply(dq_fold *f, int32_t partition, int64_t offset, const void *payload,
                  size_t len)
{
    char err[256];
    dq_event_view v;
    dq_event *ev;
    int rc;

    if (dq_event_scan(payload, len, &v) && apply_scanned(f, &v, payload, len, partition, offset,
                                                         &rc))
        return rc;
    ev = dq_event_decode(payload, len, err, sizeof err);

    if (!ev) {
        f->totals.events++;
        f->totals.unreadable++;
        return DQ_FOLD_UNREADABLE;
    }
    rc = dq_fold_apply_event(f, ev, partition, offset);
    dq_event_free(ev);
    return rc;
}

void dq_fold_get_totals(const dq_fold *f, dq_fold_totals *out)
{
    *out = f->totals;
}

static int target_cmp(const void *a, const void *b)
{
    const dq_fold_target *x = *(dq_fold_target *const *)a, *y = *(dq_fold_target *const *)b;

    return strcmp(x->key, y->key);
}

dq_fold_target *const *dq_fold_targets(dq_fold *f, size_t *n)
{
    *n = f->targets.n;
    if (!f->sorted && f->targets.n) {
        f->sorted = malloc(f->targets.n * sizeof *f->sorted);
        if (!f->sorted) {
            *n = 0;
            return NULL;
        }
        memcpy(f->sorted, f->targets.v, f->targets.n * sizeof *f->sorted);
        qsort(f->sorted, f->targets.n, sizeof *f->sorted, target_cmp);
    }
    return f->sorted;
}

const dq_fold_target *dq_fold_target_get(const dq_fold *f, const char *service,
                                         const char *environment)
{
    char key[512];

    snprintf(key, sizeof key, "%s/%s", service, environment);
    return strmap_get(&f->targets_by_key, key);
}

dq_fold_deployment *const *dq_fold_deployments(const dq_fold *f, size_t *n)
{
    *n = f->deployments.n;
    return (dq_fold_deployment *const *)f->deployments.v;
}

const dq_fold_deployment *dq_fold_deployment_get(const dq_fold *f, const char *id)
{
    return strmap_get(&f->deployments_by_id, id);
}

dq_fold_rollback *const *dq_fold_rollbacks(const dq_fold *f, size_t *n)
{
    *n = f->rollbacks.n;
    return (dq_fold_rollback *const *)f->rollbacks.v;
}

const dq_fold_stale_event *dq_fold_stale(const dq_fold *f, size_t *n)
{
    *n = f->n_stale;
    return f->stale;
}

/* ---- the state hash ------------------------------------------------------------------- */

static void hash_str(EVP_MD_CTX *md, const char *s)
{
    /* Length-prefixed so that no two different field lists give the same text. */
    char len[24];
    size_t n = s ? strlen(s) : 0;
    int k = snprintf(len, sizeof len, s ? "%zu:" : "-:", n);

    EVP_DigestUpdate(md, len, (size_t)k);
    if (s)
        EVP_DigestUpdate(md, s, n);
}

static void hash_int(EVP_MD_CTX *md, int64_t v)
{
    char buf[32];
    int k = snprintf(buf, sizeof buf, "%lld;", (long long)v);

    EVP_DigestUpdate(md, buf, (size_t)k);
}

void dq_fold_state_hash(const dq_fold *f, char out[DQ_FOLD_HASH_HEX_LEN + 1])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char h[32];
    unsigned int hl = 0;
    dq_fold_target **sorted = NULL;
    size_t n = f->targets.n;

    out[0] = '\0';
    if (!md)
        return;
    if (n && !(sorted = malloc(n * sizeof *sorted))) {
        EVP_MD_CTX_free(md);
        return;
    }
    if (n) {
        memcpy(sorted, f->targets.v, n * sizeof *sorted);
        qsort(sorted, n, sizeof *sorted, target_cmp);
    }
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, "deployq.state/v1\n", 17);
    for (size_t i = 0; i < n; i++) {
        const dq_fold_target *t = sorted[i];
        const dq_fold_rollback *r = t->last_rollback;

        hash_str(md, t->key);
        hash_str(md, t->current_version);
        hash_str(md, t->current_deployment_id);
        hash_int(md, t->current_since_ms);
        hash_str(md, t->last_verified_version);
        hash_int(md, t->last_verified_at_ms);
        hash_str(md, t->inflight ? t->inflight->id : NULL);
        hash_str(md, t->inflight ? t->inflight->step : NULL);
        hash_int(md, t->inflight ? (int64_t)t->inflight->outcome : -1);
        if (r) {
            hash_str(md, r->deployment_id);
            hash_str(md, r->from_version);
            hash_str(md, r->to_version);
            hash_str(md, dq_rollback_status_name(r->status));
            hash_int(md, r->requested_at_ms);
            hash_int(md, r->detected_at_ms);
            hash_int(md, r->restored_at_ms);
        } else {
            hash_str(md, NULL);
        }
        hash_int(md, t->max_fence);
        uint64_t counters[] = {t->n_events,     t->n_stale,     t->n_validated,
                               t->n_rejected,   t->n_awaiting,  t->n_started,
                               t->n_succeeded,  t->n_failed,    t->n_verified,
                               t->n_rollbacks,  t->n_rollbacks_succeeded,
                               t->n_rollbacks_failed};
        for (size_t k = 0; k < sizeof counters / sizeof counters[0]; k++)
            hash_int(md, (int64_t)counters[k]);
        if (t->unknown_deployment_id) { /* only when set: older states keep their hash */
            hash_str(md, "unknown");
            hash_str(md, t->unknown_deployment_id);
            hash_str(md, t->unknown_version);
            hash_int(md, t->unknown_since_ms);
        }
        if (t->paused_by) { /* only when set, as above */
            hash_str(md, "paused");
            hash_str(md, t->paused_by);
            hash_str(md, t->paused_reason);
            hash_int(md, t->paused_since_ms);
        }
        if (t->held_by) {
            hash_str(md, "held");
            hash_str(md, t->held_by);
            hash_str(md, t->held_reason);
            hash_int(md, t->held_since_ms);
        }
        if (t->canary.status != DQ_CANARY_NONE) { /* only when set, as above */
            const dq_fold_canary *c = &t->canary;

            hash_str(md, "canary");
            hash_str(md, c->deployment_id);
            hash_str(md, dq_canary_status_name(c->status));
            hash_int(md, c->step);
            hash_int(md, c->steps);
            hash_int(md, c->weight);
            hash_str(md, c->canary_color);
            hash_str(md, c->stable_color);
            hash_int(md, c->since_ms);
            hash_str(md, c->reason);
        }
        EVP_DigestUpdate(md, "\n", 1);
    }
    hash_int(md, (int64_t)f->totals.events);
    hash_int(md, (int64_t)f->totals.unreadable);
    hash_int(md, (int64_t)f->totals.untargeted);
    hash_int(md, (int64_t)f->totals.stale);
    hash_int(md, (int64_t)f->totals.deployments);
    hash_int(md, (int64_t)f->totals.rollbacks);
    EVP_DigestFinal_ex(md, h, &hl);
    EVP_MD_CTX_free(md);
    free(sorted);
    dq_hex(h, sizeof h, out);
}

/* ---- JSON views ----------------------------------------------------------------------- */

static void add_str(cJSON *o, const char *name, const char *s)
{
    if (s)
        cJSON_AddStringToObject(o, name, s);
}

cJSON *dq_fold_rollback_json(const dq_fold_rollback *r)
{
    cJSON *o = cJSON_CreateObject();

    if (!o)
        return NULL;
    add_str(o, "service", r->service);
    add_str(o, "environment", r->environment);
    add_str(o, "deployment_id", r->deployment_id);
    add_str(o, "status", dq_rollback_status_name(r->status));
    if (r->not_attempted)
        add_str(o, "policy", "notify");
    add_str(o, "from_version", r->from_version);
    add_str(o, "to_version", r->to_version);
    add_str(o, "reason", r->reason);
    add_str(o, "requested_by", r->requested_by);
    dq_json_add_time(o, "requested_at", r->requested_at_ms);
    dq_json_add_time(o, "detected_at", r->detected_at_ms);
    dq_json_add_time(o, "started_at", r->started_at_ms);
    dq_json_add_time(o, "finished_at", r->finished_at_ms);
    dq_json_add_time(o, "restored_at", r->restored_at_ms);
    if (r->status == DQ_ROLLBACK_SUCCEEDED && r->detected_at_ms)
        cJSON_AddNumberToObject(o, "time_to_restore_ms",
                                (double)(r->restored_at_ms - r->detected_at_ms));
    if (r->evidence)
        cJSON_AddItemToObject(o, "evidence", cJSON_Duplicate(r->evidence, 1));
    return o;
}

cJSON *dq_fold_deployment_json(const dq_fold_deployment *d, int with_timeline)
{
    cJSON *o = cJSON_CreateObject();

    if (!o)
        return NULL;
    add_str(o, "id", d->id);
    add_str(o, "service", d->service);
    add_str(o, "environment", d->environment);
    add_str(o, "version", d->version);
    add_str(o, "retry_of", d->retry_of);
    add_str(o, "outcome", dq_deploy_outcome_name(d->outcome));
    add_str(o, "step", d->step);
    dq_json_add_time(o, "first_at", d->first_at_ms);
    dq_json_add_time(o, "last_at", d->last_at_ms);
    dq_json_add_time(o, "commit_at", d->commit_at_ms);
    dq_json_add_time(o, "validated_at", d->validated_at_ms);
    dq_json_add_time(o, "started_at", d->started_at_ms);
    dq_json_add_time(o, "succeeded_at", d->succeeded_at_ms);
    dq_json_add_time(o, "failed_at", d->failed_at_ms);
    dq_json_add_time(o, "rejected_at", d->rejected_at_ms);
    if (d->reject_kind)
        add_str(o, "rejected_as", dq_reject_kind_name(d->reject_kind));
    dq_json_add_time(o, "verified_at", d->verified_at_ms);
    dq_json_add_time(o, "rollback_requested_at", d->rollback_requested_at_ms);
    if (d->unwatched)
        cJSON_AddFalseToObject(o, "watch");
    if (d->cost != DQ_FOLD_COST_NONE) {
        static const char *const basis[] = {"", "provider_jobs", "wall_time", "unknown"};
        cJSON *c = cJSON_AddObjectToObject(o, "cost");

        if (c) {
            cJSON_AddStringToObject(c, "basis", basis[d->cost]);
            if (d->cost != DQ_FOLD_COST_UNKNOWN)
                cJSON_AddNumberToObject(c, "amount", d->cost_amount);
        }
    }
    if (d->canary_max_weight || d->canary_aborted) {
        cJSON *c = cJSON_AddObjectToObject(o, "canary");

        if (c) {
            cJSON_AddNumberToObject(c, "max_weight", d->canary_max_weight);
            cJSON_AddBoolToObject(c, "aborted", d->canary_aborted);
        }
    }
    cJSON_AddNumberToObject(o, "fence", (double)d->fence);
    if (with_timeline) {
        cJSON *arr = cJSON_AddArrayToObject(o, "timeline");

        for (size_t i = 0; arr && i < d->n_timeline; i++) {
            const dq_fold_entry *e = &d->timeline[i];
            cJSON *x = cJSON_CreateObject();

            if (!x)
                break;
            add_str(x, "type", e->type);
            dq_json_add_time(x, "at", e->at_ms);
            cJSON_AddNumberToObject(x, "partition", e->partition);
            cJSON_AddNumberToObject(x, "offset", (double)e->offset);
            cJSON_AddNumberToObject(x, "fence", (double)e->fence);
            if (e->stale)
                cJSON_AddBoolToObject(x, "stale", 1);
            cJSON_AddItemToArray(arr, x);
        }
    }
    return o;
}

/* "name":{"since","by","reason"} when by is set (an operator's pause or hold). */
static void add_mark(cJSON *o, const char *name, const char *by, const char *reason,
                     int64_t since_ms)
{
    cJSON *m;

    if (!by || !(m = cJSON_AddObjectToObject(o, name)))
        return;
    dq_json_add_time(m, "since", since_ms);
    add_str(m, "by", by);
    add_str(m, "reason", reason);
}

/* "canary":{deployment_id, version, status, step, steps, weight, canary_color,
 * stable_color, since, reason, detail} when the target has one. */
static void add_canary(cJSON *o, const dq_fold_canary *c)
{
    cJSON *x;

    if (c->status == DQ_CANARY_NONE || !(x = cJSON_AddObjectToObject(o, "canary")))
        return;
    add_str(x, "deployment_id", c->deployment_id);
    add_str(x, "version", c->version);
    add_str(x, "status", dq_canary_status_name(c->status));
    cJSON_AddNumberToObject(x, "step", c->step);
    cJSON_AddNumberToObject(x, "steps", c->steps);
    cJSON_AddNumberToObject(x, "weight", c->weight);
    add_str(x, "canary_color", c->canary_color);
    add_str(x, "stable_color", c->stable_color);
    dq_json_add_time(x, "since", c->since_ms);
    add_str(x, "reason", c->reason);
    add_str(x, "detail", c->detail);
}

cJSON *dq_fold_target_json(const dq_fold_target *t)
{
    cJSON *o = cJSON_CreateObject(), *c;

    if (!o)
        return NULL;
    add_str(o, "service", t->service);
    add_str(o, "environment", t->environment);
    add_str(o, "current_version", t->current_version);
    add_str(o, "current_deployment_id", t->current_deployment_id);
    dq_json_add_time(o, "current_since", t->current_since_ms);
    add_str(o, "last_verified_version", t->last_verified_version);
    dq_json_add_time(o, "last_verified_at", t->last_verified_at_ms);
    if (t->inflight) {
        cJSON *x = cJSON_AddObjectToObject(o, "in_flight");

        if (x) {
            add_str(x, "deployment_id", t->inflight->id);
            add_str(x, "retry_of", t->inflight->retry_of);
            add_str(x, "version", t->inflight->version);
            add_str(x, "step", t->inflight->step);
            add_str(x, "outcome", dq_deploy_outcome_name(t->inflight->outcome));
            dq_json_add_time(x, "since", t->inflight->first_at_ms);
            dq_json_add_time(x, "last_at", t->inflight->last_at_ms);
        }
    }
    if (t->last_rollback)
        cJSON_AddItemToObject(o, "last_rollback", dq_fold_rollback_json(t->last_rollback));
    if (t->unknown_deployment_id) {
        cJSON *u = cJSON_AddObjectToObject(o, "outcome_unknown");

        if (u) {
            add_str(u, "deployment_id", t->unknown_deployment_id);
            add_str(u, "version", t->unknown_version);
            dq_json_add_time(u, "since", t->unknown_since_ms);
        }
    }
    add_mark(o, "paused", t->paused_by, t->paused_reason, t->paused_since_ms);
    add_mark(o, "held", t->held_by, t->held_reason, t->held_since_ms);
    add_canary(o, &t->canary);
    cJSON_AddNumberToObject(o, "fence", (double)t->max_fence);
    dq_json_add_time(o, "last_event_at", t->last_event_at_ms);
    c = cJSON_AddObjectToObject(o, "counts");
    if (c) {
        cJSON_AddNumberToObject(c, "events", (double)t->n_events);
        cJSON_AddNumberToObject(c, "stale", (double)t->n_stale);
        cJSON_AddNumberToObject(c, "validated", (double)t->n_validated);
        cJSON_AddNumberToObject(c, "rejected", (double)t->n_rejected);
        cJSON_AddNumberToObject(c, "awaiting_approval", (double)t->n_awaiting);
        cJSON_AddNumberToObject(c, "started", (double)t->n_started);
        cJSON_AddNumberToObject(c, "succeeded", (double)t->n_succeeded);
        cJSON_AddNumberToObject(c, "failed", (double)t->n_failed);
        cJSON_AddNumberToObject(c, "verified", (double)t->n_verified);
        cJSON_AddNumberToObject(c, "rollbacks", (double)t->n_rollbacks);
        cJSON_AddNumberToObject(c, "rollbacks_succeeded", (double)t->n_rollbacks_succeeded);
        cJSON_AddNumberToObject(c, "rollbacks_failed", (double)t->n_rollbacks_failed);
    }
    return o;
}

cJSON *dq_fold_state_json(dq_fold *f)
{
    char hash[DQ_FOLD_HASH_HEX_LEN + 1];
    cJSON *o = cJSON_CreateObject(), *tot, *arr, *st;
    dq_fold_target *const *targets;
    size_t n;

    if (!o)
        return NULL;
    dq_fold_state_hash(f, hash);
    cJSON_AddStringToObject(o, "state_hash", hash);
    tot = cJSON_AddObjectToObject(o, "totals");
    if (tot) {
        cJSON_AddNumberToObject(tot, "events", (double)f->totals.events);
        cJSON_AddNumberToObject(tot, "unreadable", (double)f->totals.unreadable);
        cJSON_AddNumberToObject(tot, "untargeted", (double)f->totals.untargeted);
        cJSON_AddNumberToObject(tot, "stale", (double)f->totals.stale);
        cJSON_AddNumberToObject(tot, "targets", (double)f->totals.targets);
        cJSON_AddNumberToObject(tot, "deployments", (double)f->totals.deployments);
        cJSON_AddNumberToObject(tot, "rollbacks", (double)f->totals.rollbacks);
        dq_json_add_time(tot, "first_at", f->totals.first_at_ms);
        dq_json_add_time(tot, "last_at", f->totals.last_at_ms);
    }
    arr = cJSON_AddArrayToObject(o, "targets");
    targets = dq_fold_targets(f, &n);
    for (size_t i = 0; arr && i < n; i++)
        cJSON_AddItemToArray(arr, dq_fold_target_json(targets[i]));
    st = cJSON_AddArrayToObject(o, "stale");
    for (size_t i = 0; st && i < f->n_stale; i++) {
        const dq_fold_stale_event *s = &f->stale[i];
        cJSON *x = cJSON_CreateObject();

        if (!x)
            break;
        add_str(x, "id", s->event_id);
        add_str(x, "type", s->type);
        add_str(x, "target", s->target);
        add_str(x, "deployment_id", s->deployment_id);
        cJSON_AddNumberToObject(x, "partition", s->partition);
        cJSON_AddNumberToObject(x, "offset", (double)s->offset);
        cJSON_AddNumberToObject(x, "fence", (double)s->fence);
        cJSON_AddNumberToObject(x, "newest_fence", (double)s->newest_fence);
        dq_json_add_time(x, "at", s->at_ms);
        cJSON_AddItemToArray(st, x);
    }
    return o;
}
