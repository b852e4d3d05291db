/*
 * demo.h - `deployq up --demo`: the whole story of deployq on one machine, unattended.
 *
 * up.c starts the stack as usual; this module adds what a demo needs around it: a small
 * demo service whose health endpoint can be flipped (tests/fakes/health.py, installed as
 * share/deployq/demo/health.py), a local provider (the `command` provider running
 * share/deployq/demo/deploy.py, which tells the demo service which version it serves; a
 * version named "*-bad" answers HTTP 500), the services section of the configuration that
 * ties them together, and the driver: submit a good version and follow it until it is
 * verified, then a bad one and follow it until it was rolled back, printing one plain
 * line per step (from deployq.events) with the evidence and the MTTR.
 */
#ifndef DQ_DEMO_H
#define DQ_DEMO_H

#include <signal.h>
#include <stddef.h>
#include <stdio.h>

#define DQ_DEMO_GOOD_VERSION "v1"
#define DQ_DEMO_BAD_VERSION "v2-bad"

typedef struct dq_demo dq_demo;

/* Find the demo's scripts (next to the deployq binary: demo/ in the build tree,
 * ../share/deployq/demo/ once installed, or $DEPLOYQ_DEMO_DIR) and start the demo service
 * on a free loopback port, its port written to <state_dir>/<name>.port and its output
 * appended to <logdir>/<name>.log (name: "demo-service" for --demo). Returns NULL
 * with a one-line reason in err when a script is missing or the service does not start
 * within 10 s. Stop it with dq_demo_free(). */
dq_demo *dq_demo_start(const char *state_dir, const char *logdir, const char *name, char *err,
                       size_t errlen);

/* The demo service's health URL ("http://127.0.0.1:PORT/health"). */
const char *dq_demo_health_url(const dq_demo *d);

/* Write the `services:` section of the demo configuration to f: service `demo`,
 * environment `staging`, its provider chain (the command provider `demo-provider`), a
 * short watch window (probe every 1 s for 8 s, 3 failures in a row roll back) and
 * `rollback: auto`. */
void dq_demo_write_services(const dq_demo *d, FILE *f);

/* Write the `services:` section of plain `deployq up` to f: service `demo` with
 * environments staging (aimed at the service staging) and production (at production),
 * each with the local provider, `rollback: auto` and a monitor (probe every 1 s for 10 s),
 * production with `requires: staging` and `promotion_needs: verified`: a version goes from
 * staging to production once verified there. */
void dq_demo_write_promotion(const dq_demo *staging, const dq_demo *production, FILE *f);

/* Run the demo against the stack whose configuration is config_path: submit
 * DQ_DEMO_GOOD_VERSION signed with key_path/key_id and follow it to deploy.verified, then
 * DQ_DEMO_BAD_VERSION and follow it to rollback.succeeded, narrating each step on out.
 * Returns 0 when the bad version was rolled back to the good one and the demo service
 * serves the good version again; otherwise prints the reason to stderr and returns 1
 * (also when *stop is set). Takes under two minutes. */
int dq_demo_run(dq_demo *d, const char *config_path, const char *key_path, const char *key_id,
                const char *logdir, volatile sig_atomic_t *stop, FILE *out);

/* Stop the demo service (SIGTERM, then SIGKILL after 5 s) and free d. Accepts NULL. */
void dq_demo_free(dq_demo *d);

#endif
