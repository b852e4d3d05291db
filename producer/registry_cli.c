/*
 * registry_cli.c - the verbs that read the registry: `deployq status`, `history`,
 * `replay`, `verify` and `report`.
 *
 * They read the registry files directly (common/domain/reglog.h: no lock, so they work while the
 * registry runs; a commit in progress is not yet durable and is quietly left out) and fold
 * the events with common/domain/fold.h, so the figures are exactly the live registry's.
 * Every verb reads its records through a reg_source: today the files; a --url mode that
 * pages through the registry's HTTP API only has to provide another source_open_*().
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


#include "cli.h"
#include "fold.h"
#include "json.h"
#include "log.h"
#include "reglog.h"
#include "report.h"
#include "httpapi.h"
#include "sign.h"
#include "stack.h"
#include "util.h"

/* ---- where records come from ---------------------------------------------------------- */

typedef struct reg_source reg_source;
struct reg_source {
    /* 1 with the next record in *e (payload valid until the next call), 0 at the end, -1
     * with a one-line reason in err. Records come partition by partition, each in log
     * order. */
    int (*next)(reg_source *s, dq_reglog_entry *e, char *err, size_t errlen);
    void (*close)(reg_source *s);
    void *impl;
    uint64_t n;       /* records returned so far */
    int progress;     /* print progress on stderr (a TTY) */
    int64_t start_mono, last_report_mono;
};

static int file_next(reg_source *s, dq_reglog_entry *e, char *err, size_t errlen)
{
    return dq_reglog_iter_next(s->impl, e, err, errlen);
}

static void file_close(reg_source *s)
{
    dq_reglog_iter_close(s->impl);
}

/* --url: the whole log fetched through /api/events (pages of 1,000, in (at, partition,
 * offset) order), then put back into per-partition log order, which is what every reader
 * here expects. Held in memory: fine for the logs a person reads over HTTP; read the files
 * (--dir) for very large ones. */
typedef struct {
    int32_t partition;
    int64_t offset;
    char *payload;
    size_t len;
} url_record;

typedef struct {
    url_record *v;
    size_t n, cap, next;
} url_source;

static int url_record_cmp(const void *a, const void *b)
{
    const url_record *x = a, *y = b;

    if (x->partition != y->partition)
        return x->partition < y->partition ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int url_next(reg_source *s, dq_reglog_entry *e, char *err, size_t errlen)
{
    url_source *u = s->impl;
    const url_record *r;

    (void)err;
    (void)errlen;
    if (u->next >= u->n)
        return 0;
    r = &u->v[u->next++];
    e->partition = r->partition;
    e->kafka_offset = r->offset;
    e->seq = u->next - 1;
    e->payload = (const unsigned char *)r->payload;
    e->len = r->len;
    memset(e->hash, 0, sizeof e->hash); /* the API does not serve record hashes */
    return 1;
}

static void url_close(reg_source *s)
{
    url_source *u = s->impl;

    for (size_t i = 0; u && i < u->n; i++)
        free(u->v[i].payload);
    if (u)
        free(u->v);
    free(u);
}

static url_source *url_fetch(const char *base, const char *token, char *err, size_t errlen)
{
    url_source *u = calloc(1, sizeof *u);
    char path[512], cursor[128] = "";

    if (!u) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (;;) {
        long status = 0;
        cJSON *page, *items;
        const char *nc;

        snprintf(path, sizeof path, "/api/events?order=asc&limit=1000%s%s",
                 cursor[0] ? "&cursor=" : "", cursor);
        page = dq_httpapi_get(base, path, token, &status, err, errlen);
        if (!page)
            goto fail;
        items = cJSON_GetObjectItemCaseSensitive(page, "events");
        if (!cJSON_IsArray(items))
            items = cJSON_GetObjectItemCaseSensitive(page, "items");
        if (!cJSON_IsArray(items)) {
            snprintf(err, errlen, "%s%s: unexpected answer (no events array)", base, path);
            cJSON_Delete(page);
            goto fail;
        }
        for (const cJSON *it = items->child; it; it = it->next) {
            const cJSON *ev = cJSON_GetObjectItemCaseSensitive(it, "event");
            url_record r;

            if (u->n == u->cap) {
                size_t cap = u->cap ? u->cap * 2 : 1024;
                url_record *v = realloc(u->v, cap * sizeof *v);

                if (!v) {
                    cJSON_Delete(page);
                    snprintf(err, errlen, "out of memory");
                    goto fail;
                }
                u->v = v;
                u->cap = cap;
            }
            r.partition = (int32_t)dq_json_num(it, "partition", -1);
            r.offset = (int64_t)dq_json_num(it, "offset", -1);
            r.payload = ev ? cJSON_PrintUnformatted(ev) : NULL;
            if (!r.payload) {
                cJSON_Delete(page);
                snprintf(err, errlen, "%s%s: an item without its event", base, path);
                goto fail;
            }
            r.len = strlen(r.payload);
            u->v[u->n++] = r;
        }
        nc = dq_json_str(page, "next_cursor");
        if (!nc || !*nc || strlen(nc) >= sizeof cursor) {
            cJSON_Delete(page);
            break;
        }
        dq_strlcpy(cursor, nc, sizeof cursor);
        cJSON_Delete(page);
    }
    qsort(u->v, u->n, sizeof *u->v, url_record_cmp);
    return u;
fail:
    for (size_t i = 0; i < u->n; i++)
        free(u->v[i].payload);
    free(u->v);
    free(u);
    return NULL;
}

/* Options every reading verb shares. */
typedef struct {
    dq_cli cli;
    const char *dir;  /* --dir */
    const char *url;  /* --url: the registry's HTTP API */
    const char *token; /* --token, else $DEPLOYQ_REGISTRY_TOKEN */
    char dirbuf[PATH_MAX];
} reg_opts;

/* The registry directory: --dir, else registry.dir of the configuration, else the running
 * `deployq up` stack's (<its --data dir>/registry or <state dir>/registry), else $DEPLOYQ_STATE_DIR/registry, else
 * ./deployq-registry (the worker's own defaults, in the same order). */
static const char *registry_dir(reg_opts *o, const dq_config *cfg)
{
    const char *st;
    dq_stack *stack;

    if (o->dir)
        return o->dir;
    if (cfg) {
        char num[32];
        const char *v = dq_config_text(cfg, dq_config_view(cfg, "registry.dir"), num, sizeof num);

        if (v) {
            dq_strlcpy(o->dirbuf, v, sizeof o->dirbuf);
            return o->dirbuf;
        }
    }
    stack = dq_stack_find();
    if (stack && stack->data_dir) { /* `up --data DIR`: the registry writes DIR/registry */
        snprintf(o->dirbuf, sizeof o->dirbuf, "%s/registry", stack->data_dir);
        dq_stack_free(stack);
        return o->dirbuf;
    }
    if (stack) {
        char *sd = dq_stack_dir(0);

        dq_stack_free(stack);
        if (sd) {
            snprintf(o->dirbuf, sizeof o->dirbuf, "%s/registry", sd);
            free(sd);
            return o->dirbuf;
        }
    }
    st = getenv("DEPLOYQ_STATE_DIR");
    if (st && *st) {
        snprintf(o->dirbuf, sizeof o->dirbuf, "%s/registry", st);
        return o->dirbuf;
    }
    return "./deployq-registry";
}

static reg_source *source_open(reg_opts *o, char *err, size_t errlen)
{
    dq_config *cfg = NULL;
    const char *dir = o->dir;
    reg_source *s;
    dq_reglog_iter *it;

    if (o->url) {
        url_source *u = url_fetch(o->url, o->token ? o->token : getenv("DEPLOYQ_REGISTRY_TOKEN"),
                                  err, errlen);

        if (!u)
            return NULL;
        s = calloc(1, sizeof *s);
        if (!s) {
            reg_source tmp = {.impl = u};
            url_close(&tmp);
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
        s->next = url_next;
        s->close = url_close;
        s->impl = u;
        s->progress = 0;
        s->start_mono = s->last_report_mono = dq_mono_ms();
        return s;
    }
    if (!dir) {
        cfg = dq_cli_load_config_sections(&o->cli, DQ_CLI_READER_SECTIONS);
        if (!cfg) {
            snprintf(err, errlen, "cannot load the configuration");
            return NULL;
        }
        dir = registry_dir(o, cfg);
        if (dir != o->dirbuf) {
            dq_strlcpy(o->dirbuf, dir, sizeof o->dirbuf);
            dir = o->dirbuf;
        }
        dq_config_free(cfg);
    }
    o->dir = dir;
    it = dq_reglog_iter_open(dir, err, errlen);
    if (!it)
        return NULL;
    s = calloc(1, sizeof *s);
    if (!s) {
        dq_reglog_iter_close(it);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->next = file_next;
    s->close = file_close;
    s->impl = it;
    s->progress = isatty(STDERR_FILENO);
    s->start_mono = s->last_report_mono = dq_mono_ms();
    return s;
}

/* The next record, with progress on stderr (a TTY) about every half second. */
static int source_next(reg_source *s, dq_reglog_entry *e, char *err, size_t errlen)
{
    int rc = s->next(s, e, err, errlen);

    if (rc == 1)
        s->n++;
    if (s->progress && (s->n & 0xffff) == 0) {
        int64_t now = dq_mono_ms();

        if (now - s->last_report_mono >= 500) {
            double secs = (double)(now - s->start_mono) / 1000.0;

            fprintf(stderr, "\r%llu records read (%.0f/s)   ", (unsigned long long)s->n,
                    secs > 0 ? (double)s->n / secs : 0.0);
            s->last_report_mono = now;
        }
    }
    return rc;
}

static void source_close(reg_source *s)
{
    if (!s)
        return;
    if (s->progress && dq_mono_ms() - s->start_mono >= 500)
        fprintf(stderr, "\r%llu records read%20s\n", (unsigned long long)s->n, "");
    s->close(s);
    free(s);
}

/* ---- shared option handling ----------------------------------------------------------- */

/* Every reading verb takes the common options and --json, and these, in its table. */
#define REG_TAKES (DQ_CLI_COMMON | DQ_CLI_JSON)
#define REG_OPTS(o)                                                                        \
    DQ_OPT_STRING('d', "dir", &(o).dir), DQ_OPT_STRING(0, "url", &(o).url),                \
        DQ_OPT_STRING(0, "token", &(o).token)

#define REG_USAGE                                                                          \
    "  -d, --dir DIR         the registry directory (default: registry.dir of the\n"       \
    "                        configuration, else the running stack's, else\n"              \
    "                        $DEPLOYQ_STATE_DIR/registry, else ./deployq-registry)\n"      \
    "      --url URL         read through the registry's HTTP API instead of the files\n" \
    "                        (e.g. http://127.0.0.1:8787; fetches the whole log)\n"        \
    "      --token T         the API's bearer token (default $DEPLOYQ_REGISTRY_TOKEN)\n"   \
    "      --json            machine-readable output\n"

/* A point in time: RFC 3339, or a duration meaning that long ago ("24h", "7d"). */
static int parse_when(const char *s, int64_t *ms)
{
    int64_t d;

    if (dq_time_parse(s, ms) == 0)
        return 0;
    d = dq_duration_parse(s);
    if (d < 0)
        return -1;
    *ms = dq_now_ms() - d;
    return 0;
}

/* --since / --until (DQ_OPT_PARSE): parse_when into an int64_t. */
static int when_opt(void *ms, const char *arg)
{
    return parse_when(arg, ms);
}

static void print_json(cJSON *j)
{
    char *txt = j ? cJSON_Print(j) : NULL;

    if (txt) {
        fputs(txt, stdout);
        fputc('\n', stdout);
    }
    free(txt);
}

/* ---- folding: status, replay, report -------------------------------------------------- */

typedef struct {
    int64_t at_ms;          /* 0: no time limit */
    int32_t at_partition;   /* -1: --at OFFSET applies to every partition */
    int64_t at_offset;      /* -1: no offset limit */
} fold_limit;

/* Fold the registry (up to the limit, when one is given) into a new fold. NULL with the
 * error printed. */
static dq_fold *fold_registry(reg_opts *o, const fold_limit *lim)
{
    char err[512];
    reg_source *s = source_open(o, err, sizeof err);
    dq_fold *f;
    dq_reglog_entry e;
    int rc;

    if (!s) {
        dq_cli_fail(&o->cli, "%s", err);
        return NULL;
    }
    f = dq_fold_new();
    if (!f) {
        source_close(s);
        dq_cli_fail(&o->cli, "out of memory");
        return NULL;
    }
    /* status, replay and report show targets and rollbacks, never a timeline. */
    dq_fold_set_timelines(f, 0);
    while ((rc = source_next(s, &e, err, sizeof err)) == 1) {
        if (lim && lim->at_offset >= 0 &&
            (lim->at_partition < 0 || lim->at_partition == e.partition) &&
            e.kafka_offset > lim->at_offset)
            continue;
        if (lim && lim->at_ms) {
            /* The time limit needs the event's own time: a cheap look at "at" first. */
            dq_event_view v;
            dq_event *ev;
            int r;

            if (dq_event_scan((const char *)e.payload, e.len, &v)) {
                if (v.at_ms > lim->at_ms)
                    continue;
                if (dq_fold_apply(f, e.partition, e.kafka_offset, e.payload, e.len) ==
                    DQ_FOLD_ENOMEM) {
                    rc = -1;
                    snprintf(err, sizeof err, "out of memory");
                    break;
                }
                continue;
            }
            ev = dq_event_decode((const char *)e.payload, e.len, NULL, 0);

            if (ev && ev->at_ms > lim->at_ms) {
                dq_event_free(ev);
                continue;
            }
            if (ev)
                r = dq_fold_apply_event(f, ev, e.partition, e.kafka_offset);
            else
                r = dq_fold_apply(f, e.partition, e.kafka_offset, e.payload, e.len);
            dq_event_free(ev);
            if (r == DQ_FOLD_ENOMEM) {
                rc = -1;
                snprintf(err, sizeof err, "out of memory");
                break;
            }
            continue;
        }
        if (dq_fold_apply(f, e.partition, e.kafka_offset, e.payload, e.len) == DQ_FOLD_ENOMEM) {
            rc = -1;
            snprintf(err, sizeof err, "out of memory");
            break;
        }
    }
    source_close(s);
    if (rc < 0) {
        dq_cli_fail(&o->cli, "%s/%s", o->dir, err);
        dq_fold_free(f);
        return NULL;
    }
    return f;
}

static int target_selected(const dq_fold_target *t, const char *service, const char *env)
{
    return (!service || strcmp(service, t->service) == 0) &&
           (!env || strcmp(env, t->environment) == 0);
}

static const char *or_dash(const char *s)
{
    return s && *s ? s : "-";
}

static void short_time(int64_t ms, char *out, size_t len)
{
    char t[DQ_TIME_LEN + 1];

    if (!ms) {
        dq_strlcpy(out, "-", len);
        return;
    }
    dq_time_format(ms, t);
    /* "2026-01-01T10:00:00.000Z" -> "2026-01-01 10:00:00" */
    t[10] = ' ';
    t[19] = '\0';
    dq_strlcpy(out, t, len);
}

/* The target's canary, when it has one: "canary: step 2/4 at 25% (green, v2) since ...",
 * "canary: promoted (green, v2) since ...", "canary: aborted at 5%: analysis: ...". */
static void print_canary(const dq_fold_target *t)
{
    const dq_fold_canary *c = &t->canary;
    char when[32];

    if (c->status == DQ_CANARY_NONE)
        return;
    short_time(c->since_ms, when, sizeof when);
    if (c->status == DQ_CANARY_RUNNING)
        printf("  %s: canary: step %d/%d at %d%% (%s, %s) since %s\n", t->key, c->step, c->steps,
               c->weight, or_dash(c->canary_color), or_dash(c->version), when);
    else if (c->status == DQ_CANARY_PROMOTED)
        printf("  %s: canary: promoted after %d steps (%s, %s) since %s\n", t->key, c->steps,
               or_dash(c->canary_color), or_dash(c->version), when);
    else
        printf("  %s: canary: aborted at %d%%: %s%s%s (%s, %s) at %s\n", t->key, c->weight,
               or_dash(c->reason), c->detail ? ": " : "", c->detail ? c->detail : "",
               or_dash(c->canary_color), or_dash(c->version), when);
}

/* The lines under a target's row: an operator's pause or hold (who, since when, why, and
 * the verb that ends it), and the retry that is in flight or running now (its link). */
static void print_target_notes(const dq_fold *f, const dq_fold_target *t)
{
    const dq_fold_deployment *cur =
        t->current_deployment_id ? dq_fold_deployment_get(f, t->current_deployment_id) : NULL;
    char when[32];

    if (t->paused_by) {
        short_time(t->paused_since_ms, when, sizeof when);
        printf("  %s: paused since %s by %s%s%s%s: its deploys wait in order (deployq resume)\n",
               t->key, when, t->paused_by, t->paused_reason ? " (" : "",
               t->paused_reason ? t->paused_reason : "", t->paused_reason ? ")" : "");
    }
    if (t->held_by) {
        short_time(t->held_since_ms, when, sizeof when);
        printf("  %s: automatic rollback held since %s by %s%s%s%s: the watch still runs "
               "(deployq release)\n",
               t->key, when, t->held_by, t->held_reason ? " (" : "",
               t->held_reason ? t->held_reason : "", t->held_reason ? ")" : "");
    }
    print_canary(t);
    if (t->inflight && t->inflight->retry_of)
        printf("  %s: in flight %s is a retry of %s\n", t->key, t->inflight->id,
               t->inflight->retry_of);
    if (cur && cur->retry_of && cur != t->inflight)
        printf("  %s: current %s is a retry of %s\n", t->key, cur->id, cur->retry_of);
}

static void print_targets_table(dq_fold *f, const char *service, const char *env)
{
    dq_fold_target *const *ts;
    size_t n, shown = 0;

    ts = dq_fold_targets(f, &n);
    printf("%-28s %-16s %-19s %-16s %-32s %s\n", "TARGET", "CURRENT", "SINCE", "VERIFIED",
           "IN FLIGHT", "LAST ROLLBACK");
    for (size_t i = 0; i < n; i++) {
        const dq_fold_target *t = ts[i];
        char since[32], inflight[128], rb[160];

        if (!target_selected(t, service, env))
            continue;
        shown++;
        short_time(t->current_since_ms, since, sizeof since);
        if (t->inflight)
            snprintf(inflight, sizeof inflight, "%.16s %s", or_dash(t->inflight->version),
                     or_dash(t->inflight->step));
        else
            dq_strlcpy(inflight, "-", sizeof inflight);
        if (t->last_rollback) {
            const dq_fold_rollback *r = t->last_rollback;
            char when[32];
            const char *probe = r->evidence ? dq_json_str(r->evidence, "probe") : NULL;

            short_time(r->requested_at_ms ? r->requested_at_ms : r->started_at_ms, when,
                       sizeof when);
            snprintf(rb, sizeof rb, "%s %s -> %s (%s%s%s)", when, or_dash(r->from_version),
                     or_dash(r->to_version),
                     r->not_attempted ? "not rolled back: policy notify" : dq_rollback_status_name(r->status),
                     probe ? ", probe " : "", probe ? probe : "");
        } else {
            dq_strlcpy(rb, "-", sizeof rb);
        }
        /* A deploy that may have gone live after all: what runs is not known. */
        printf("%-28s %-16.16s %-19s %-16.16s %-32s %s\n", t->key,
               t->unknown_deployment_id ? "unknown" : or_dash(t->current_version), since,
               or_dash(t->last_verified_version), inflight, rb);
        if (t->unknown_deployment_id) {
            char when[32];
            short_time(t->unknown_since_ms, when, sizeof when);
            printf("  %s: outcome unknown since %s: deploy %s of %s timed out and its cancel was not confirmed; "
                   "it may be live (was %s)\n",
                   t->key, when, t->unknown_deployment_id, or_dash(t->unknown_version), or_dash(t->current_version));
        }
        print_target_notes(f, t);
    }
    if (!shown)
        printf("(no targets)\n");
}

/* JSON of the state, restricted to the selected targets (the hash covers everything). */
static cJSON *state_json(dq_fold *f, const char *service, const char *env)
{
    cJSON *j = dq_fold_state_json(f), *arr, *keep;

    if (!j || (!service && !env))
        return j;
    arr = cJSON_DetachItemFromObject(j, "targets");
    keep = cJSON_AddArrayToObject(j, "targets");
    for (cJSON *t = arr ? arr->child : NULL; t && keep;) {
        cJSON *next = t->next;
        const char *s = dq_json_str(t, "service"), *e = dq_json_str(t, "environment");

        if ((!service || (s && strcmp(s, service) == 0)) && (!env || (e && strcmp(e, env) == 0)))
            cJSON_AddItemToArray(keep, cJSON_DetachItemViaPointer(arr, t));
        t = next;
    }
    cJSON_Delete(arr);
    return j;
}

static const char status_usage[] =
    "Usage: deployq status [--service NAME] [--env NAME] [--json] [--dir DIR]\n"
    "\n"
    "Per deploy target, from the registry: the version running now and since when, the last\n"
    "verified version, the deploy in flight and its step, the last rollback and its\n"
    "evidence. Under a target's row: an operator's pause or hold of automatic rollback\n"
    "(since when, by which key, why: deployq pause/hold), and the deployment in flight or\n"
    "running now when it is a retry (deployq retry), with the deployment it retries, and\n"
    "the canary rollout under way or the last one (step, weight, colors; or promoted, or\n"
    "aborted and why). --json has them as \"paused\", \"held\", \"retry_of\" and \"canary\".\n"
    "Events ignored for a stale fencing token are listed with --json (\"stale\").\n"
    "\n"
    "  -s, --service NAME    only this service\n"
    "  -e, --env NAME        only this environment\n" REG_USAGE "\n" DQ_CLI_COMMON_USAGE;

int dq_cmd_status(int argc, char **argv)
{
    reg_opts o = {.cli = {.verb = "status", .usage = status_usage, .takes = REG_TAKES}};
    const char *service = NULL, *env = NULL;
    const dq_cli_opt opts[] = {
        REG_OPTS(o),
        DQ_OPT_STRING('s', "service", &service),
        DQ_OPT_STRING('e', "env", &env),
        DQ_OPT_END,
    };
    int rc;
    dq_fold *f;

    if ((rc = dq_cli_parse(&o.cli, opts, argc, argv)) >= 0)
        return rc;
    f = fold_registry(&o, NULL);
    if (!f)
        return 1;
    if (o.cli.json) {
        cJSON *j = state_json(f, service, env);

        print_json(j);
        cJSON_Delete(j);
    } else {
        print_targets_table(f, service, env);
    }
    dq_fold_free(f);
    return 0;
}

static const char replay_usage[] =
    "Usage: deployq replay [--at TIME|OFFSET|P:OFFSET] [--service NAME] [--env NAME] [--json]\n"
    "\n"
    "Fold the registry into the state of every target and print it with its state hash.\n"
    "Without --at the whole log is folded: the hash equals the live registry's. With --at\n"
    "the state as it was then (a canary rollout: its step and weight at that moment):\n"
    "  --at 2026-01-02T10:00:00Z   events whose time is at or before it (also \"2h\": that\n"
    "                              long ago)\n"
    "  --at 1234                   records up to Kafka offset 1234 in every partition\n"
    "  --at 3:1234                 partition 3 up to offset 1234, other partitions whole\n"
    "\n"
    "  -s, --service NAME    only show this service (the hash covers everything)\n"
    "  -e, --env NAME        only show this environment\n" REG_USAGE "\n" DQ_CLI_COMMON_USAGE;

int dq_cmd_replay(int argc, char **argv)
{
    reg_opts o = {.cli = {.verb = "replay", .usage = replay_usage, .takes = REG_TAKES}};
    const char *service = NULL, *env = NULL, *at = NULL;
    const dq_cli_opt opts[] = {
        REG_OPTS(o),
        DQ_OPT_STRING(0, "at", &at),
        DQ_OPT_STRING('s', "service", &service),
        DQ_OPT_STRING('e', "env", &env),
        DQ_OPT_END,
    };
    fold_limit lim = {.at_partition = -1, .at_offset = -1};
    int rc;
    dq_fold *f;
    char hash[DQ_FOLD_HASH_HEX_LEN + 1];

    if ((rc = dq_cli_parse(&o.cli, opts, argc, argv)) >= 0)
        return rc;
    if (at) {
        const char *colon = strchr(at, ':');
        long long p, off;

        if (dq_parse_int(at, 0, INT64_MAX, &off) == 0) {
            lim.at_offset = off;
        } else if (colon && colon - at < 8 && !strchr(at, 'T')) {
            char pbuf[8];

            memcpy(pbuf, at, (size_t)(colon - at));
            pbuf[colon - at] = '\0';
            if (dq_parse_int(pbuf, 0, INT32_MAX, &p) != 0 ||
                dq_parse_int(colon + 1, 0, INT64_MAX, &off) != 0)
                return dq_cli_usage(&o.cli, replay_usage, 2,
                                    "--at P:OFFSET needs two non-negative numbers");
            lim.at_partition = (int32_t)p;
            lim.at_offset = off;
        } else if (parse_when(at, &lim.at_ms) != 0) {
            return dq_cli_usage(&o.cli, replay_usage, 2,
                                "--at expects an RFC 3339 time, a duration, OFFSET or P:OFFSET");
        }
    }
    f = fold_registry(&o, at ? &lim : NULL);
    if (!f)
        return 1;
    dq_fold_state_hash(f, hash);
    if (o.cli.json) {
        cJSON *j = state_json(f, service, env);

        if (j && at)
            cJSON_AddStringToObject(j, "at", at);
        print_json(j);
        cJSON_Delete(j);
    } else {
        dq_fold_totals tot;
        size_t n_stale;
        const dq_fold_stale_event *st = dq_fold_stale(f, &n_stale);

        dq_fold_get_totals(f, &tot);
        print_targets_table(f, service, env);
        printf("\n%llu events folded%s%s; %llu stale-fence events ignored\n",
               (unsigned long long)tot.events, at ? " up to " : "", at ? at : "",
               (unsigned long long)tot.stale);
        for (size_t i = 0; i < n_stale; i++)
            printf("  stale: p%d offset %lld %s %s fence %lld < %lld\n", (int)st[i].partition,
                   (long long)st[i].offset, st[i].target, st[i].type, (long long)st[i].fence,
                   (long long)st[i].newest_fence);
        printf("state hash %s\n", hash);
    }
    dq_fold_free(f);
    return 0;
}

static const char report_usage[] =
    "Usage: deployq report [--since T] [--until T] [--service NAME] [--env NAME]\n"
    "                      [--by-target] [--json | --csv]\n"
    "\n"
    "Delivery figures from the registry, each beside the target of the memo deployq is built\n"
    "from: success rate (> 99%; a deploy later rolled back, or whose watch failed, is a\n"
    "failed change, not a success), MTTR (< 5 min; every rollback that ended: restored ones\n"
    "to the restore, failed ones to the failure, manual ones too; n says how many), share\n"
    "of bad changes stopped before production (> 95%; by a gate, a watch or rollback\n"
    "outside production, or a canary aborted before 100% of the traffic, with the share it\n"
    "had reached; stale, replayed, unsigned or malformed requests are \"refused as\n"
    "invalid input\", never catches), time to deploy (request -> verified; < 15 min for\n"
    "staging, judged by its p90), plus change-failure rate, deployment frequency and lead\n"
    "time, and CI/CD cost per deployment (< $0.50, the median; from GitHub's run jobs priced\n"
    "per runner label and CircleCI's jobs per resource class by a provider's cost: rates,\n"
    "or wall time marked as an estimate; deploys on a provider without cost: are\n"
    "\"not priced\", never $0).\n"
    "docs/operations.md (\"Delivery figures\") and common/domain/report.h define each\n"
    "figure exactly.\n"
    "\n"
    "      --since T         deployments that began at or after T (RFC 3339, or \"7d\": that\n"
    "                        long ago)\n"
    "      --until T         ... and before T\n"
    "  -s, --service NAME    only this service\n"
    "  -e, --env NAME        only this environment\n"
    "      --by-target       also the figures of each service/environment\n"
    "      --production-env NAME  the environment that counts as production (default\n"
    "                        production)\n"
    "      --staging-env NAME  the environment the < 15 min time-to-deploy target is for\n"
    "                        (default staging)\n"
    "      --csv             service,environment,metric,value lines (\"*,*\": the whole\n"
    "                        report)\n" REG_USAGE "\n" DQ_CLI_COMMON_USAGE;

int dq_cmd_report(int argc, char **argv)
{
    reg_opts o = {.cli = {.verb = "report", .usage = report_usage, .takes = REG_TAKES}};
    dq_report_opts ro = {0};
    int rc, csv = 0;
    const dq_cli_opt opts[] = {
        REG_OPTS(o),
        DQ_OPT_PARSE(0, "since", &ro.since_ms, when_opt, "--since: not a time or duration"),
        DQ_OPT_PARSE(0, "until", &ro.until_ms, when_opt, "--until: not a time or duration"),
        DQ_OPT_STRING('s', "service", &ro.service),
        DQ_OPT_STRING('e', "env", &ro.environment),
        DQ_OPT_STRING(0, "production-env", &ro.production_env),
        DQ_OPT_STRING(0, "staging-env", &ro.staging_env),
        DQ_OPT_FLAG(0, "by-target", &ro.by_target),
        DQ_OPT_FLAG(0, "csv", &csv),
        DQ_OPT_END,
    };
    dq_report rep;
    dq_fold *f;

    if ((rc = dq_cli_parse(&o.cli, opts, argc, argv)) >= 0)
        return rc;
    if (o.cli.json && csv)
        return dq_cli_usage(&o.cli, report_usage, 2, "--json and --csv exclude each other");
    f = fold_registry(&o, NULL);
    if (!f)
        return 1;
    if (dq_report_compute(f, &ro, &rep) != 0) {
        dq_fold_free(f);
        dq_cli_fail(&o.cli, "out of memory");
        return 1;
    }
    if (o.cli.json) {
        cJSON *j = dq_report_json(&rep);

        print_json(j);
        cJSON_Delete(j);
    } else if (csv) {
        dq_report_write_csv(&rep, stdout);
    } else {
        dq_report_write_table(&rep, stdout);
    }
    dq_report_clear(&rep);
    dq_fold_free(f);
    return 0;
}

/* ---- history -------------------------------------------------------------------------- */

static const char history_usage[] =
    "Usage: deployq history [--service NAME] [--env NAME] [--since T] [--until T]\n"
    "                       [--type TYPE] [--deployment ID] [--json]\n"
    "\n"
    "The registry's events in log order (partition by partition), filtered. --json prints\n"
    "each event exactly as stored (one JSON document a line: what an auditor keeps).\n"
    "A retry's verdict (deployq retry) ends its row with \"retry of\" the old deployment.\n"
    "\n"
    "  -s, --service NAME    only this service\n"
    "  -e, --env NAME        only this environment\n"
    "      --since T         events at or after T (RFC 3339, or \"24h\": that long ago)\n"
    "      --until T         events before T\n"
    "  -t, --type TYPE       only this event type (repeatable)\n"
    "      --deployment ID   only this deployment\n" REG_USAGE "\n" DQ_CLI_COMMON_USAGE;

/* history's --type, repeatable. */
typedef struct type_list {
    const char *v[16];
    int n;
} type_list;

static int type_opt(void *list, const char *arg)
{
    type_list *t = list;

    if (t->n == (int)(sizeof t->v / sizeof t->v[0]))
        return -1;
    t->v[t->n++] = arg;
    return 0;
}

/* 1 when the peek (event.h) settles that the record's member name is not want. */
static int peek_differs(const dq_reglog_entry *e, const char *name, const char *want)
{
    dq_event_span v;
    int r = dq_event_peek((const char *)e->payload, e->len, name, &v);

    return r == 2 || (r == 1 && !dq_event_span_eq(v, want));
}

/* 1 when a peek at --service, --env or --deployment drops the record: whatever the record
 * is, history would not show it (a record that is no event is shown only without filters). */
static int peek_dropped(const dq_reglog_entry *e, const char *service, const char *env,
                        const char *deployment)
{
    return (service && peek_differs(e, "service", service)) ||
           (env && peek_differs(e, "environment", env)) ||
           (deployment && peek_differs(e, "deployment_id", deployment));
}

/* The filters of history on a scanned event: the same tests as on a decoded one. */
static int view_selected(const dq_event_view *v, const char *service, const char *env,
                         const char *deployment, int64_t since, int64_t until,
                         const type_list *types)
{
    if (service && !dq_event_span_eq(v->service, service))
        return 0;
    if (env && !dq_event_span_eq(v->environment, env))
        return 0;
    if (deployment && !dq_event_span_eq(v->deployment_id, deployment))
        return 0;
    if (since && v->at_ms < since)
        return 0;
    if (until && v->at_ms >= until)
        return 0;
    if (types->n) {
        for (int i = 0; i < types->n; i++)
            if (dq_event_span_eq(v->type, types->v[i]))
                return 1;
        return 0;
    }
    return 1;
}

int dq_cmd_history(int argc, char **argv)
{
    reg_opts o = {.cli = {.verb = "history", .usage = history_usage, .takes = REG_TAKES}};
    const char *service = NULL, *env = NULL, *deployment = NULL;
    type_list types = {.n = 0};
    int64_t since = 0, until = 0;
    const dq_cli_opt opts[] = {
        REG_OPTS(o),
        DQ_OPT_STRING('s', "service", &service),
        DQ_OPT_STRING('e', "env", &env),
        DQ_OPT_PARSE(0, "since", &since, when_opt, "--since: not a time or duration"),
        DQ_OPT_PARSE(0, "until", &until, when_opt, "--until: not a time or duration"),
        DQ_OPT_PARSE('t', "type", &types, type_opt, "at most 16 --type options"),
        DQ_OPT_STRING(0, "deployment", &deployment),
        DQ_OPT_END,
    };
    int rc;
    reg_source *s;
    dq_reglog_entry e;
    char err[512];
    uint64_t shown = 0;

    if ((rc = dq_cli_parse(&o.cli, opts, argc, argv)) >= 0)
        return rc;
    s = source_open(&o, err, sizeof err);
    if (!s) {
        dq_cli_fail(&o.cli, "%s", err);
        return 1;
    }
    if (!o.cli.json)
        printf("%-24s %-4s %-9s %-24s %-28s %-16s %-6s %s\n", "AT", "P", "OFFSET", "TYPE",
               "TARGET", "VERSION", "FENCE", "DEPLOYMENT");
    while ((rc = source_next(s, &e, err, sizeof err)) == 1) {
        dq_event_view v;
        dq_event *ev;
        int keep;

        /* Most records are settled by a peek at the filtered member, or by the scan:
         * dropped, or printed as stored with --json. Only a record neither is sure of, or
         * one shown as a table row, is decoded. */
        if (peek_dropped(&e, service, env, deployment))
            continue;
        if (dq_event_scan((const char *)e.payload, e.len, &v)) {
            if (!view_selected(&v, service, env, deployment, since, until, &types))
                continue;
            if (o.cli.json) {
                shown++;
                fwrite(e.payload, 1, e.len, stdout);
                fputc('\n', stdout);
                continue;
            }
        }
        ev = dq_event_decode((const char *)e.payload, e.len, NULL, 0);
        keep = ev != NULL;

        if (keep && service && (!ev->service || strcmp(ev->service, service) != 0))
            keep = 0;
        if (keep && env && (!ev->environment || strcmp(ev->environment, env) != 0))
            keep = 0;
        if (keep && deployment && (!ev->deployment_id || strcmp(ev->deployment_id, deployment) != 0))
            keep = 0;
        if (keep && since && ev->at_ms < since)
            keep = 0;
        if (keep && until && ev->at_ms >= until)
            keep = 0;
        if (keep && types.n) {
            int any = 0;

            for (int i = 0; i < types.n && !any; i++)
                any = strcmp(types.v[i], ev->type) == 0;
            keep = any;
        }
        /* An unreadable record is shown only when nothing filters it out. */
        if (!ev && !service && !env && !deployment && !since && !until && !types.n)
            keep = 1;
        if (keep) {
            shown++;
            if (o.cli.json) {
                fwrite(e.payload, 1, e.len, stdout);
                fputc('\n', stdout);
            } else if (ev) {
                char at[DQ_TIME_LEN + 1], target[160];
                const char *retry_of = dq_json_str(ev->data, "retry_of");

                snprintf(target, sizeof target, "%s/%s", or_dash(ev->service),
                         or_dash(ev->environment));
                printf("%-24s %-4d %-9lld %-24s %-28s %-16.16s %-6lld %s%s%s\n",
                       dq_time_format(ev->at_ms, at), (int)e.partition,
                       (long long)e.kafka_offset, ev->type, target, or_dash(ev->version),
                       (long long)ev->fence, or_dash(ev->deployment_id),
                       retry_of ? " retry of " : "", retry_of ? retry_of : "");
            } else {
                printf("%-24s %-4d %-9lld (not a deployq event: %zu bytes)\n", "-",
                       (int)e.partition, (long long)e.kafka_offset, e.len);
            }
        }
        dq_event_free(ev);
    }
    source_close(s);
    if (rc < 0) {
        fflush(stdout);
        dq_cli_fail(&o.cli, "%s/%s", o.dir, err);
        return 1;
    }
    if (!o.cli.json && !shown)
        printf("(no events)\n");
    return 0;
}

/* ---- verify and checkpoints ----------------------------------------------------------- */

/* Check a signed checkpoint (dq_reglog_checkpoint_check) and print what differs. The key
 * is --pubkey or the configuration's key with the checkpoint's key_id. 0 matches,
 * 1 mismatch (printed), -1 error (err). */
static int check_checkpoint(reg_opts *o, const char *path, const char *pubkey, char *err,
                            size_t errlen)
{
    size_t len;
    char *txt = dq_read_file(path, 1 << 20, &len);
    dq_reglog_checkpoint *cp = NULL;
    dq_reglog_cp_result res = {0};
    dq_config *cfg = NULL;
    const char *key_id;
    int rc = -1;

    if (!txt) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    cp = dq_reglog_checkpoint_parse(txt, len, path, err, errlen);
    if (!cp)
        goto out;
    key_id = dq_reglog_checkpoint_key_id(cp);
    if (!pubkey) {
        const dq_key *k;

        cfg = dq_cli_load_config_sections(&o->cli, DQ_CLI_READER_SECTIONS);
        k = cfg ? dq_config_key(cfg, key_id) : NULL;
        if (!k) {
            snprintf(err, errlen, "key %s is not in the configuration: pass --pubkey", key_id);
            goto out;
        }
        pubkey = k->public_key;
    }
    rc = dq_reglog_checkpoint_check(cp, o->dir, pubkey, &res, err, errlen);
    if (rc < 0)
        goto out;
    if (!res.signature_ok) {
        printf("checkpoint %s: signature INVALID\n", path);
        goto out;
    }
    for (size_t i = 0; i < res.n_mismatches; i++) {
        const dq_reglog_cp_mismatch *m = &res.mismatches[i];
        char hex[2 * DQ_REGLOG_HASH_LEN + 1];

        if (m->kind == DQ_REGLOG_CP_CUT)
            printf("p%d: the log has %llu records, the checkpoint %llu: records "
                   "were removed from the end\n", (int)m->partition,
                   (unsigned long long)m->log_records,
                   (unsigned long long)m->checkpoint_records);
        else
            printf("p%d: record %llu hashes to %s, the checkpoint says %s: the log "
                   "was rewritten\n", (int)m->partition,
                   (unsigned long long)(m->checkpoint_records - 1),
                   dq_hex(m->hash, DQ_REGLOG_HASH_LEN, hex), or_dash(m->want));
    }
    printf("checkpoint %s (key %s, %s): %s\n", path, key_id, or_dash(res.at),
           rc ? "DOES NOT MATCH the log" : "matches the log");
out:
    dq_reglog_cp_result_free(&res);
    dq_reglog_checkpoint_free(cp);
    free(txt);
    dq_config_free(cfg);
    return rc;
}

static const char verify_usage[] =
    "Usage: deployq verify [--json] [--dir DIR]\n"
    "                      [--sign KEYFILE --key-id ID [--out FILE]]\n"
    "                      [--checkpoint FILE [--pubkey BASE64]]\n"
    "\n"
    "Walk every hash chain of the registry: magic, length, crc32c, sequence, the prev-hash\n"
    "link, partition and offset order, segment names (docs/registry-format.md). Prints\n"
    "every partition's record count and head hash, and the first broken link by file and\n"
    "byte offset. Exit status 0 only for an intact log, 1 when a link is broken, 2 on a\n"
    "usage error or an unreadable directory.\n"
    "\n"
    "      --sign KEYFILE    after an intact verify, write a checkpoint (head hashes, record\n"
    "                        counts, time) signed with this Ed25519 key, to publish\n"
    "                        elsewhere: a log later cut short or rewritten no longer matches\n"
    "      --key-id ID       the signing key's id (required with --sign)\n"
    "      --out FILE        write the checkpoint there (default: stdout)\n"
    "      --checkpoint FILE check the log against a signed checkpoint too\n"
    "      --pubkey BASE64   its public key (default: the key with its key_id in the\n"
    "                        configuration's keys)\n" REG_USAGE "\n" DQ_CLI_COMMON_USAGE;

int dq_cmd_verify(int argc, char **argv)
{
    reg_opts o = {.cli = {.verb = "verify", .usage = verify_usage, .takes = REG_TAKES}};
    const char *sign = NULL, *key_id = NULL, *out_path = NULL, *checkpoint = NULL,
               *pubkey = NULL;
    const dq_cli_opt opts[] = {
        REG_OPTS(o),
        DQ_OPT_STRING(0, "sign", &sign),
        DQ_OPT_STRING(0, "key-id", &key_id),
        DQ_OPT_STRING(0, "out", &out_path),
        DQ_OPT_STRING(0, "checkpoint", &checkpoint),
        DQ_OPT_STRING(0, "pubkey", &pubkey),
        DQ_OPT_END,
    };
    int rc;
    dq_reglog_report rep = {0};
    char err[512] = "";
    dq_config *cfg;

    if ((rc = dq_cli_parse(&o.cli, opts, argc, argv)) >= 0)
        return rc;
    if (sign && !key_id)
        return dq_cli_usage(&o.cli, verify_usage, 2, "--sign needs --key-id");
    if (o.url) {
        dq_cli_fail(&o.cli, "--url: verify reads the files themselves; run it where they are");
        return 2;
    }
    if (!o.dir) {
        cfg = dq_cli_load_config_sections(&o.cli, DQ_CLI_READER_SECTIONS);
        if (!cfg)
            return 2;
        o.dir = registry_dir(&o, cfg);
        if (o.dir != o.dirbuf) {
            dq_strlcpy(o.dirbuf, o.dir, sizeof o.dirbuf);
            o.dir = o.dirbuf;
        }
        dq_config_free(cfg);
    }
    rc = dq_reglog_verify_dir(o.dir, &rep, err, sizeof err);
    if (rc < 0) {
        dq_cli_fail(&o.cli, "%s", err);
        return 2;
    }
    if (o.cli.json) {
        cJSON *j = cJSON_CreateObject(), *arr;

        if (j) {
            cJSON_AddStringToObject(j, "dir", o.dir);
            cJSON_AddBoolToObject(j, "intact", rc == 0);
            cJSON_AddNumberToObject(j, "records", (double)rep.records);
            arr = cJSON_AddArrayToObject(j, "partitions");
            for (size_t i = 0; arr && i < rep.n_partitions; i++) {
                const dq_reglog_partition_report *p = &rep.partitions[i];
                cJSON *x = cJSON_CreateObject();
                char hex[2 * DQ_REGLOG_HASH_LEN + 1];

                if (!x)
                    break;
                cJSON_AddNumberToObject(x, "partition", p->partition);
                cJSON_AddNumberToObject(x, "records", (double)p->records);
                cJSON_AddStringToObject(x, "head", dq_hex(p->head_hash, DQ_REGLOG_HASH_LEN, hex));
                cJSON_AddBoolToObject(x, "ok", p->ok);
                if (!p->ok)
                    cJSON_AddStringToObject(x, "error", p->error);
                cJSON_AddItemToArray(arr, x);
            }
            if (rc != 0)
                cJSON_AddStringToObject(j, "first_error", rep.first_error);
        }
        print_json(j);
        cJSON_Delete(j);
    } else {
        for (size_t i = 0; i < rep.n_partitions; i++) {
            const dq_reglog_partition_report *p = &rep.partitions[i];
            char hex[2 * DQ_REGLOG_HASH_LEN + 1];

            printf("p%-4d %10llu records  head %s  %s\n", (int)p->partition,
                   (unsigned long long)p->records, dq_hex(p->head_hash, DQ_REGLOG_HASH_LEN, hex),
                   p->ok ? "ok" : p->error);
        }
        if (rc == 0)
            printf("intact: %llu records in %zu partitions under %s\n",
                   (unsigned long long)rep.records, rep.n_partitions, o.dir);
    }
    if (rc != 0)
        dq_cli_fail(&o.cli, "%s/%s (%zu of %zu partitions broken)", o.dir, rep.first_error,
                    rep.errors, rep.n_partitions);
    if (rc == 0 && checkpoint) {
        int cr = check_checkpoint(&o, checkpoint, pubkey, err, sizeof err);

        if (cr < 0) {
            dq_cli_fail(&o.cli, "checkpoint: %s", err);
            rc = 1;
        } else if (cr > 0) {
            rc = 1;
        }
    }
    if (rc == 0 && sign) {
        dq_signer *signer = dq_signer_load(sign, err, sizeof err);
        char *cp = signer ? dq_reglog_checkpoint_sign(&rep, signer, key_id, dq_now_ms(), err,
                                                      sizeof err)
                          : NULL;

        dq_signer_free(signer);
        if (!cp) {
            dq_cli_fail(&o.cli, "checkpoint: %s", err);
            rc = 1;
        } else if (out_path) {
            FILE *fp = fopen(out_path, "w");

            if (!fp || fprintf(fp, "%s\n", cp) < 0 || fclose(fp) != 0) {
                dq_cli_fail(&o.cli, "%s: %s", out_path, strerror(errno));
                rc = 1;
            } else if (!o.cli.json) {
                printf("signed checkpoint written to %s\n", out_path);
            }
        } else {
            printf("%s\n", cp);
        }
        free(cp);
    }
    dq_reglog_report_free(&rep);
    return rc == 0 ? 0 : 1;
}
