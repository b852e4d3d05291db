/*
 * wait.c - following one deployment on deployq.events for `deployq submit --wait`
 * (see wait.h): a group-less consumer assigned to every partition from the offsets noted
 * before the request was sent, a line per step as it happens, and the exit code of the
 * outcome.
 */
#include "wait.h"

#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "event.h"
#include "json.h"
#include "kafka.h"
#include "util.h"

/* The ids of the deployment's events already shown: a redelivered event (the same id,
 * e.g. a verdict judged again after its delivery failed) is shown and counted once, as
 * every consumer of deployq.events deduplicates by id. A deployment has few events; past
 * SEEN_MAX the oldest ids are forgotten. */
#define SEEN_MAX 256
typedef struct seen_ids {
    char id[SEEN_MAX][DQ_UUID_LEN + 1];
    size_t n, next;
} seen_ids;

/* 1 when id was seen before; otherwise remembers it and returns 0. */
static int seen_before(seen_ids *s, const char *id)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->id[i], id) == 0)
            return 1;
    snprintf(s->id[s->next], sizeof s->id[s->next], "%s", id);
    s->next = (s->next + 1) % SEEN_MAX;
    if (s->n < SEEN_MAX)
        s->n++;
    return 0;
}

struct dq_follow {
    const dq_config *cfg;
    rd_kafka_t *rk;
    rd_kafka_topic_partition_list_t *start;
    seen_ids seen;
};

const char *dq_wait_outcome_name(int code)
{
    switch (code) {
    case DQ_WAIT_DEPLOYED: return "deployed";
    case DQ_WAIT_REJECTED: return "rejected";
    case DQ_WAIT_FAILED: return "failed";
    case DQ_WAIT_ROLLED_BACK: return "rolled_back";
    case DQ_WAIT_TIMEOUT: return "timed_out";
    case DQ_WAIT_NOT_ROLLED_BACK: return "not_rolled_back";
    case DQ_WAIT_APPROVAL_EXPIRED: return "approval_expired";
    default: return "error";
    }
}

void dq_follow_free(dq_follow *f)
{
    if (!f)
        return;
    if (f->start)
        rd_kafka_topic_partition_list_destroy(f->start);
    if (f->rk) {
        rd_kafka_consumer_close(f->rk);
        rd_kafka_destroy(f->rk);
    }
    free(f);
}

dq_follow *dq_follow_new(const dq_config *cfg, int timeout_ms, char *err, size_t errlen)
{
    dq_follow *f = calloc(1, sizeof *f);
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_topic_t *rkt = NULL;
    const struct rd_kafka_metadata *md = NULL;
    char errstr[512], group[64], id[DQ_UUID_LEN + 1];
    rd_kafka_resp_err_t e;
    const char *topic = cfg->topic_events;

    if (!f) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    f->cfg = cfg;
    conf = dq_kafka_conf(cfg, err, errlen);
    if (!conf)
        goto fail;
    /* No group is joined (partitions are assigned by hand) and nothing is committed; the
     * id only satisfies librdkafka. */
    if (dq_uuid_v4(id) != 0)
        memset(id, '0', sizeof id - 1), id[DQ_UUID_LEN] = '\0';
    snprintf(group, sizeof group, "deployq-wait-%.8s", id);
    if (rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof errstr) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof errstr) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "enable.partition.eof", "false", errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "kafka: %s", errstr);
        goto fail;
    }
    f->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!f->rk) {
        snprintf(err, errlen, "kafka: %s", errstr);
        goto fail;
    }
    conf = NULL; /* now owned by the rd_kafka_t */
    rkt = rd_kafka_topic_new(f->rk, topic, NULL);
    if (!rkt)
        goto oom;
    e = rd_kafka_metadata(f->rk, 0, rkt, &md, timeout_ms);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR || md->topic_cnt != 1 || md->topics[0].err ||
        md->topics[0].partition_cnt <= 0) {
        snprintf(err, errlen, "cannot read the partitions of %s: %s", topic,
                 e ? rd_kafka_err2str(e)
                   : (md && md->topic_cnt == 1 && md->topics[0].err) ? rd_kafka_err2str(md->topics[0].err)
                                                                      : "no partitions");
        goto fail;
    }
    f->start = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
    for (int i = 0; i < md->topics[0].partition_cnt; i++) {
        int32_t p = md->topics[0].partitions[i].id;
        int64_t lo = 0, hi = 0;

        e = rd_kafka_query_watermark_offsets(f->rk, topic, p, &lo, &hi, timeout_ms);
        if (e) {
            snprintf(err, errlen, "cannot read the end of %s [%d]: %s", topic, (int)p, rd_kafka_err2str(e));
            goto fail;
        }
        rd_kafka_topic_partition_list_add(f->start, topic, p)->offset = hi;
    }
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return f;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    if (md)
        rd_kafka_metadata_destroy(md);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    if (conf)
        rd_kafka_conf_destroy(conf);
    dq_follow_free(f);
    return NULL;
}


/* A canary's step, verdict and end in a line: "step 2/4: 25% to green",
 * "step 1 failed: errors: canary 12/20 ...", "aborted at 5%: analysis; weight restored in
 * 412 ms", "promoted: 100% on green after 4 steps". */
static void canary_detail(const dq_event *ev, char *out, size_t len)
{
    const cJSON *d = ev->data;
    int step = (int)dq_json_num(d, "step", 0), steps = (int)dq_json_num(d, "steps", 0);
    int weight = (int)dq_json_num(d, "weight", 0);
    const char *canary = dq_json_str(d, "canary_color") ? dq_json_str(d, "canary_color") : "?";

    if (strcmp(ev->type, DQ_EV_CANARY_STEP) == 0) {
        snprintf(out, len, "step %d/%d: %d%% to %s", step, steps, weight, canary);
    } else if (strcmp(ev->type, DQ_EV_CANARY_ANALYSIS) == 0) {
        const char *why = dq_json_str(d, "reason");

        snprintf(out, len, "step %d/%d at %d%% %s%s%s", step, steps, weight,
                 cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(d, "passed")) ? "passed" : "failed",
                 why && why[0] ? ": " : "", why && why[0] ? why : "");
    } else if (strcmp(ev->type, DQ_EV_CANARY_ABORTED) == 0) {
        const char *reason = dq_json_str(d, "reason"), *detail = dq_json_str(d, "detail");
        int restored = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(d, "weight_restored"));
        double ttz = dq_json_num(d, "time_to_zero_ms", -1);
        char tail[64] = "";

        if (restored && ttz >= 0)
            snprintf(tail, sizeof tail, " in %.0f ms", ttz);
        snprintf(out, len, "aborted at %d%% (step %d): %s%s%s; %s%s", weight, step,
                 reason ? reason : "?", detail && detail[0] ? ": " : "", detail ? detail : "",
                 restored ? "traffic back on the stable version" : "THE ROUTER DID NOT CONFIRM "
                                                                   "the canary's weight 0",
                 tail);
    } else if (strcmp(ev->type, DQ_EV_CANARY_PROMOTED) == 0) {
        snprintf(out, len, "promoted: 100%% on %s after %d steps", canary, steps);
    }
}

/* One line per step, for people. */
static void print_step(FILE *out, const dq_event *ev)
{
    char t[DQ_TIME_LEN + 1], detail[1200] = "";
    const cJSON *d = ev->data;
    const char *s;

    dq_time_format(ev->at_ms, t);
    if (strcmp(ev->type, DQ_EV_REJECTED) == 0 || strcmp(ev->type, DQ_EV_APPROVAL_REFUSED) == 0 ||
        strcmp(ev->type, DQ_EV_OPERATOR_REFUSED) == 0) {
        const cJSON *r;
        size_t used = 0, n = 0;
        int w;

        /* A refused decision or command names what was refused and whose key sent it, then
         * the reasons, as a rejection does: "approve by approver-1: approver_is_signer: ..." */
        if (strcmp(ev->type, DQ_EV_REJECTED) != 0) {
            const char *what = dq_json_str(d, "decision") ? dq_json_str(d, "decision")
                                                           : dq_json_str(d, "verb");

            w = snprintf(detail, sizeof detail, "%s by %s: ", what ? what : "?",
                         dq_json_str(d, "key_id") ? dq_json_str(d, "key_id") : ev->actor ? ev->actor : "?");
            if (w > 0 && (size_t)w < sizeof detail)
                used = (size_t)w;
        }
        cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(d, "reasons"))
        {
            w = snprintf(detail + used, sizeof detail - used, "%s%s: %s", n++ ? "; " : "",
                         dq_json_str(r, "code") ? dq_json_str(r, "code") : "?",
                         dq_json_str(r, "message") ? dq_json_str(r, "message") : "");
            if (w < 0 || (size_t)w >= sizeof detail - used)
                break;
            used += (size_t)w;
        }
    } else if (strcmp(ev->type, DQ_EV_VALIDATED) == 0) {
        snprintf(detail, sizeof detail, "signed by %s%s%s%s%s",
                 dq_json_str(d, "key_id") ? dq_json_str(d, "key_id") : "?",
                 dq_json_str(d, "approved_by") ? ", approved by " : "",
                 dq_json_str(d, "approved_by") ? dq_json_str(d, "approved_by") : "",
                 cJSON_GetObjectItemCaseSensitive(d, "override_freeze") ? ", freeze overridden: " : "",
                 (s = dq_json_str(cJSON_GetObjectItemCaseSensitive(d, "override_freeze"), "reason")) ? s : "");
    } else if (strncmp(ev->type, "canary.", 7) == 0) {
        canary_detail(ev, detail, sizeof detail);
    } else if (strcmp(ev->type, DQ_EV_AWAITING_APPROVAL) == 0) {
        snprintf(detail, sizeof detail, "needs an approver: deployq approve %s (or deny)",
                 ev->deployment_id);
    } else if ((s = dq_json_str(d, "provider")) != NULL) {
        snprintf(detail, sizeof detail, "provider %s%s%s%s%s", s,
                 dq_json_str(d, "reason") ? ", reason " : "",
                 dq_json_str(d, "reason") ? dq_json_str(d, "reason") : "",
                 dq_json_str(d, "url") ? ", " : "", dq_json_str(d, "url") ? dq_json_str(d, "url") : "");
    } else if ((s = dq_json_str(d, "reason")) != NULL) {
        snprintf(detail, sizeof detail, "%s", s);
    }
    fprintf(out, "%s  %-24s %s/%s %s%s%s\n", t, ev->type, ev->service ? ev->service : "?",
            ev->environment ? ev->environment : "?", ev->version ? ev->version : "",
            detail[0] ? "  " : "", detail);
    fflush(out);
}

/* The exit code an event settles, or -1 when the deployment goes on. */
static int outcome_of(const dq_follow *f, const dq_event *ev, int *watching)
{
    const char *t = ev->type;

    if (strcmp(t, DQ_EV_REJECTED) == 0) {
        const cJSON *r;

        cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(ev->data, "reasons"))
        {
            const char *code = dq_json_str(r, "code");

            if (code && strcmp(code, "approval_expired") == 0)
                return DQ_WAIT_APPROVAL_EXPIRED;
        }
        return DQ_WAIT_REJECTED;
    }
    if (strcmp(t, DQ_EV_ROLLBACK_FAILED) == 0 && dq_json_str(ev->data, "policy") &&
        strcmp(dq_json_str(ev->data, "policy"), "notify") == 0)
        return DQ_WAIT_NOT_ROLLED_BACK;
    if (strcmp(t, DQ_EV_ROLLBACK_HELD) == 0) /* `deployq hold`: a person decides */
        return DQ_WAIT_NOT_ROLLED_BACK;
    if (strcmp(t, DQ_EV_FAILED) == 0 || strcmp(t, DQ_EV_ROLLBACK_FAILED) == 0)
        return DQ_WAIT_FAILED;
    if (strcmp(t, DQ_EV_ROLLBACK_SUCCEEDED) == 0)
        return DQ_WAIT_ROLLED_BACK;
    if (strcmp(t, DQ_EV_VERIFIED) == 0)
        return DQ_WAIT_DEPLOYED;
    if (strcmp(t, DQ_EV_SUCCEEDED) == 0) {
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(ev->data, "watch");

        /* The executor says whether a watch follows (data.watch); only an event of an
         * older executor, without it, leaves the guess to this client's configuration. */
        if (cJSON_IsBool(w) ? !cJSON_IsTrue(w) : !dq_config_env_watched(f->cfg, ev->service, ev->environment))
            return DQ_WAIT_DEPLOYED;
        *watching = 1; /* deployed, but only verified (or rolled back) settles it */
    }
    return -1;
}

int dq_follow_run(dq_follow *f, const char *deployment_id, int64_t timeout_ms, int json, FILE *out,
                  volatile sig_atomic_t *stop)
{
    int64_t deadline = dq_mono_ms() + timeout_ms;
    int code = DQ_WAIT_TIMEOUT, watching = 0;
    rd_kafka_resp_err_t e;

    e = rd_kafka_assign(f->rk, f->start);
    if (e) {
        fprintf(stderr, "deployq: submit: cannot read %s: %s\n", f->cfg->topic_events, rd_kafka_err2str(e));
        return DQ_WAIT_ERROR;
    }
    while (dq_mono_ms() < deadline && !(stop && *stop)) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(f->rk, 200);
        dq_event *ev;
        char why[256];
        int settled;

        if (!msg)
            continue;
        if (msg->err) {
            /* Transport errors are retried by librdkafka; only say so. */
            if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF && !json)
                fprintf(stderr, "deployq: submit: %s\n", rd_kafka_message_errstr(msg));
            rd_kafka_message_destroy(msg);
            continue;
        }
        ev = dq_event_decode(msg->payload, msg->len, why, sizeof why);
        rd_kafka_message_destroy(msg);
        if (!ev)
            continue;
        if (!ev->deployment_id || strcmp(ev->deployment_id, deployment_id) != 0 ||
            (ev->id[0] && seen_before(&f->seen, ev->id))) {
            dq_event_free(ev);
            continue;
        }
        if (json) {
            char *text = dq_event_encode(ev);

            if (text)
                fprintf(out, "%s\n", text);
            fflush(out);
            free(text);
        } else {
            print_step(out, ev);
        }
        settled = outcome_of(f, ev, &watching);
        dq_event_free(ev);
        if (settled >= 0) {
            code = settled;
            break;
        }
    }
    if (json)
        fprintf(out, "{\"deployment_id\":\"%s\",\"outcome\":\"%s\",\"exit_code\":%d}\n", deployment_id,
                dq_wait_outcome_name(code), code);
    else if (code == DQ_WAIT_TIMEOUT)
        fprintf(out, "timed out after %lld s waiting for %s%s; it may still go on\n",
                (long long)(timeout_ms / 1000), deployment_id,
                watching ? " to be verified" : "");
    else
        fprintf(out, "%s: %s\n", deployment_id, dq_wait_outcome_name(code));
    fflush(out);
    return code;
}
