/*
 * hook.c - `deployq hook install`: a git pre-push hook that runs `deployq check` for the
 * branches a push updates (lint, then the `checks:` of every environment whose `branch:`
 * is one of them), so a broken deployq.yaml, a missing variable or a failing test is
 * caught on the developer's machine, before CI (stage 1 of the pipeline). `deployq hook uninstall` removes
 * a hook this command wrote, and nothing else.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "util.h"

#define HOOK_MARK "written by `deployq hook install`"

static const char hook_usage[] =
    "Usage: deployq hook install [--repo DIR] [--config FILE] [--force]\n"
    "       deployq hook uninstall [--repo DIR]\n"
    "\n"
    "install writes the git pre-push hook of the repository (DIR, default: the one the\n"
    "current directory is in; core.hooksPath is honoured) that runs `deployq check` before\n"
    "every push: lint of the configuration, then, for each pushed branch, the required_vars\n"
    "and `checks:` of every environment whose `branch:` is that branch (deployq check\n"
    "--branch). A problem or a failed check stops the push. Skip the checks on purpose with\n"
    "`DEPLOYQ_SKIP_CHECKS=1 git push` (lint still runs; the hook says it skipped them), or\n"
    "the whole hook with `git push --no-verify`. DEPLOYQ_VARS_FROM=FILE passes --vars-from.\n"
    "uninstall removes a hook written by install.\n"
    "\n"
    "  -C, --repo DIR      the repository (default: the current directory's)\n"
    "  -c, --config FILE   the configuration the hook checks (default: deployq.yaml at the\n"
    "                      top of the repository when it exists, else $DEPLOYQ_CONFIG at\n"
    "                      push time); a file inside the repository is written relative\n"
    "                      to its top\n"
    "  -f, --force         replace a pre-push hook that deployq did not write\n"
    "  -h, --help          this help\n"
    "\n"
    "Exit status: 0 done, 1 failed (reason on stderr), 2 usage.\n";

/* Run git with args in dir; its first output line into out. 0 ok, -1 failed. */
static int git_line(const char *dir, const char *const *args, char *out, size_t outlen)
{
    int fds[2], status;
    pid_t pid;
    ssize_t n;
    size_t len = 0;

    if (pipe(fds) != 0)
        return -1;
    pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        char *argv[16];
        int i = 0, devnull = open("/dev/null", O_WRONLY);

        argv[i++] = (char *)"git";
        argv[i++] = (char *)"-C";
        argv[i++] = (char *)dir;
        for (int j = 0; args[j] && i < 15; j++)
            argv[i++] = (char *)args[j];
        argv[i] = NULL;
        dup2(fds[1], 1);
        if (devnull >= 0)
            dup2(devnull, 2);
        close(fds[0]);
        close(fds[1]);
        execvp("git", argv);
        _exit(127);
    }
    close(fds[1]);
    while (len + 1 < outlen && (n = read(fds[0], out + len, outlen - 1 - len)) > 0)
        len += (size_t)n;
    out[len] = '\0';
    close(fds[0]);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    out[strcspn(out, "\n")] = '\0';
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 && out[0] ? 0 : -1;
}

/* Append s to the hook text in single quotes (the shell's only quoting without escapes). */
static void shell_quote(FILE *f, const char *s)
{
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'')
            fputs("'\\''", f);
        else
            fputc(*s, f);
    }
    fputc('\'', f);
}

static int is_ours(const char *path)
{
    size_t len;
    char *text = dq_read_file(path, 1 << 20, &len);
    int ours = text && strstr(text, HOOK_MARK) != NULL;

    free(text);
    return ours;
}

int dq_cmd_hook(int argc, char **argv)
{
    const char *repo = ".", *config, *action;
    int force = 0, rc;
    dq_cli cli = {.verb = "hook", .usage = hook_usage, .takes = DQ_CLI_CONFIG, .n_args = 1,
                  .args_reason = "expected install or uninstall"};
    const dq_cli_opt opts[] = {
        DQ_OPT_STRING('C', "repo", &repo),
        DQ_OPT_FLAG('f', "force", &force),
        DQ_OPT_END,
    };
    const char *top_args[] = {"rev-parse", "--show-toplevel", NULL};
    const char *hooks_args[] = {"rev-parse", "--path-format=absolute", "--git-path", "hooks", NULL};
    char top[PATH_MAX], hooks[PATH_MAX], path[PATH_MAX + 16], tmp[PATH_MAX + 32], cfgbuf[PATH_MAX];
    char self[PATH_MAX];
    ssize_t n;
    FILE *f;

    if ((rc = dq_cli_parse(&cli, opts, argc, argv)) >= 0)
        return rc;
    config = cli.config_path;
    action = cli.args[0];
    if (strcmp(action, "install") != 0 && strcmp(action, "uninstall") != 0)
        return dq_cli_usage(&cli, hook_usage, 2, "expected install or uninstall");

    if (git_line(repo, top_args, top, sizeof top) != 0) {
        dq_cli_fail(&cli, "%s is not inside a git work tree (or git is not installed)", repo);
        return 1;
    }
    if (git_line(repo, hooks_args, hooks, sizeof hooks) != 0) {
        dq_cli_fail(&cli, "cannot find the hooks directory of %s", top);
        return 1;
    }
    snprintf(path, sizeof path, "%s/pre-push", hooks);

    if (strcmp(action, "uninstall") == 0) {
        if (access(path, F_OK) != 0) {
            printf("no pre-push hook in %s\n", hooks);
            return 0;
        }
        if (!is_ours(path)) {
            dq_cli_fail(&cli, "%s was not written by deployq; left alone", path);
            return 1;
        }
        if (unlink(path) != 0) {
            dq_cli_fail(&cli, "cannot remove %s: %s", path, strerror(errno));
            return 1;
        }
        printf("removed %s\n", path);
        return 0;
    }

    if (access(path, F_OK) == 0 && !is_ours(path) && !force) {
        dq_cli_fail(&cli, "%s exists and was not written by deployq: pass --force to replace it", path);
        return 1;
    }
    if (config) {
        char *real = realpath(config, NULL);
        size_t tl = strlen(top);

        if (!real) {
            dq_cli_fail(&cli, "%s: %s", config, strerror(errno));
            return 1;
        }
        /* Inside the repository: relative to its top (hooks run there), so the hook keeps
         * working when the clone moves. */
        if (strncmp(real, top, tl) == 0 && real[tl] == '/')
            dq_strlcpy(cfgbuf, real + tl + 1, sizeof cfgbuf);
        else
            dq_strlcpy(cfgbuf, real, sizeof cfgbuf);
        free(real);
        config = cfgbuf;
    } else {
        snprintf(tmp, sizeof tmp, "%s/deployq.yaml", top);
        if (access(tmp, R_OK) == 0)
            config = "deployq.yaml";
    }
    n = readlink("/proc/self/exe", self, sizeof self - 1);
    self[n > 0 ? n : 0] = '\0';

    if (mkdir(hooks, 0755) != 0 && errno != EEXIST) {
        dq_cli_fail(&cli, "cannot create %s: %s", hooks, strerror(errno));
        return 1;
    }
    snprintf(tmp, sizeof tmp, "%s/.pre-push.deployq.tmp", hooks);
    f = fopen(tmp, "w");
    if (!f) {
        dq_cli_fail(&cli, "cannot write %s: %s", tmp, strerror(errno));
        return 1;
    }
    fprintf(f,
            "#!/bin/sh\n"
            "# git pre-push hook, " HOOK_MARK ".\n"
            "# Runs `deployq check` for the branches this push updates: lint of the whole\n"
            "# configuration, then for every environment whose `branch:` is one of them its\n"
            "# required_vars and the service's `checks:`. A problem or a failed check stops the push.\n"
            "# Skip the checks on purpose: DEPLOYQ_SKIP_CHECKS=1 git push (lint still runs, and\n"
            "# this hook says so). Skip everything: git push --no-verify. Remove: deployq hook uninstall\n"
            "DEPLOYQ=\"${DEPLOYQ:-");
    fputs(self[0] ? self : "deployq", f);
    fprintf(f, "}\"\n"
               "if ! command -v \"$DEPLOYQ\" >/dev/null 2>&1; then DEPLOYQ=deployq; fi\n"
               "set --\n"
               "# git gives one line per ref: <local ref> <local sha> <remote ref> <remote sha>;\n"
               "# a deleted branch (local sha all zeros) has nothing to check\n"
               "while read -r _lref lsha rref _rsha; do\n"
               "    case \"$rref:$lsha\" in refs/heads/*:*[!0]*) set -- \"$@\" --branch \"${rref#refs/heads/}\" ;; esac\n"
               "done\n"
               "if [ \"${DEPLOYQ_SKIP_CHECKS:-}\" = 1 ]; then\n"
               "    echo \"deployq: pre-push: checks skipped on purpose (DEPLOYQ_SKIP_CHECKS=1): lint only\" >&2\n"
               "    set -- \"$@\" --no-checks\n"
               "fi\n"
               "if [ -n \"${DEPLOYQ_VARS_FROM:-}\" ]; then set -- \"$@\" --vars-from \"$DEPLOYQ_VARS_FROM\"; fi\n"
               "exec \"$DEPLOYQ\" check --quiet");
    if (config) {
        fputs(" --config ", f);
        shell_quote(f, config);
    }
    fputs(" \"$@\"\n", f);
    if (fclose(f) != 0 || chmod(tmp, 0755) != 0 || rename(tmp, path) != 0) {
        dq_cli_fail(&cli, "cannot install %s: %s", path, strerror(errno));
        unlink(tmp);
        return 1;
    }
    printf("installed %s (runs deployq check%s%s)\n", path, config ? " --config " : "",
           config ? config : "");
    return 0;
}
