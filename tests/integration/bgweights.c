/*
 * bgweights.c - a test driver for routers that take weights (common/domain/bluegreen.h):
 * loads a configuration's blue_green section and calls dq_bg_set_weights,
 * dq_bg_read_weights or dq_bg_switch once, so an integration test (0512) can drive a real
 * HAProxy through deployq's own client. Built with the integration tests, never installed;
 * not a deployq command.
 *
 * Usage: deployq-bgweights CONFIG SERVICE ENVIRONMENT set BLUE GREEN
 *        deployq-bgweights CONFIG SERVICE ENVIRONMENT read      prints "blue=N green=N"
 *        deployq-bgweights CONFIG SERVICE ENVIRONMENT switch COLOR
 * Exit 0, or 1 with deployq's one-line reason on stderr (2: usage).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bluegreen.h"
#include "config.h"
#include "log.h"
#include "util.h"

static int usage(const char *prog)
{
    fprintf(stderr, "usage: %s CONFIG SERVICE ENVIRONMENT (set BLUE GREEN | read | switch COLOR)\n", prog);
    return 2;
}

int main(int argc, char **argv)
{
    char err[1024];
    dq_config *cfg;
    dq_bluegreen *bg;
    long long b, g;
    int w[2], rc = 1;

    if (argc < 5)
        return usage(argv[0]);
    dq_log_init("deployq-bgweights", DQ_LOG_OFF, -1);
    cfg = dq_config_load(argv[1], err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    bg = dq_bg_load(cfg, argv[2], argv[3], err, sizeof err);
    dq_config_free(cfg);
    if (!bg) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (strcmp(argv[4], "set") == 0 && argc == 7 && dq_parse_int(argv[5], -1000, 1000, &b) == 0 &&
        dq_parse_int(argv[6], -1000, 1000, &g) == 0) {
        w[0] = (int)b;
        w[1] = (int)g;
        rc = dq_bg_set_weights(bg, w, 1, err, sizeof err) == 0 ? 0 : 1;
    } else if (strcmp(argv[4], "read") == 0 && argc == 5) {
        rc = dq_bg_read_weights(bg, w, err, sizeof err) == 0 ? 0 : 1;
        if (rc == 0)
            printf("blue=%d green=%d\n", w[0], w[1]);
    } else if (strcmp(argv[4], "switch") == 0 && argc == 6) {
        rc = dq_bg_switch(bg, argv[5], 1, err, sizeof err) == 0 ? 0 : 1;
    } else {
        rc = usage(argv[0]);
    }
    if (rc == 1)
        fprintf(stderr, "%s\n", err);
    dq_bg_free(bg);
    return rc;
}
