/*
 * stack.h - the running `deployq up` stack, found through a small JSON state file.
 *
 * `deployq up` writes <state dir>/stack.json with its pid, the broker's bootstrap
 * address, the Redis URL, the configuration file and the CI key it generated; any later
 * `deployq` finds it without flags. The state dir is $DEPLOYQ_STATE_DIR, else
 * $XDG_RUNTIME_DIR/deployq, else /tmp/deployq-<uid>. A file whose pid is gone is stale
 * and ignored.
 */
#ifndef DQ_STACK_H
#define DQ_STACK_H

#include <sys/types.h>

typedef struct dq_stack {
    pid_t pid;
    char *brokers;
    char *redis_url;
    char *config_path;
    char *ci_key_path;
    char *ci_key_id;
    char *approver_key_path;
} dq_stack;

/* The state directory (created 0700 when create is set). malloc'd. */
char *dq_stack_dir(int create);
/* The running stack, or NULL when none (or its process is gone). */
dq_stack *dq_stack_find(void);
/* Write the state file atomically. 0 ok, -1 (errno). */
int dq_stack_write(const dq_stack *s);
void dq_stack_remove(void);
void dq_stack_free(dq_stack *s);

#endif
