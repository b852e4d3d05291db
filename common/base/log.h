/*
 * log.h - the one logging facility of every deployq program.
 *
 * Messages go to stderr: plain text when stderr is a terminal, one JSON object per line
 * otherwise (so journald, docker and CI collectors can parse them). Every message passes
 * through the redaction list first: a secret registered with dq_log_redact() is replaced
 * by "***" wherever it appears, so a token that slips into an error string never reaches
 * a log. Logging is process-wide state (like redis' serverLog); it is the one global in
 * common/.
 */
#ifndef DQ_LOG_H
#define DQ_LOG_H

#include <stdarg.h>
#include <stddef.h>

typedef enum { DQ_LOG_DEBUG = 0, DQ_LOG_INFO, DQ_LOG_WARN, DQ_LOG_ERROR, DQ_LOG_OFF } dq_log_level;

#define DQ_PRINTF(fmt_idx, arg_idx) __attribute__((format(printf, fmt_idx, arg_idx)))

/* Set the program name shown in each line, the minimum level, and the format:
 * json = 1 forces JSON lines, 0 forces text, -1 chooses by isatty(stderr).
 * DEPLOYQ_LOG_LEVEL (debug|info|warn|error) and DEPLOYQ_LOG_FORMAT (json|text) in the
 * environment override level and format. */
void dq_log_init(const char *program, dq_log_level level, int json);

/* Parse "debug", "info", "warn", "error", "off"; returns -1 for anything else. */
int dq_log_level_parse(const char *s);

/* Register a secret: it is masked in every later log line. Strings shorter than 4
 * bytes are ignored (masking "a" would garble every line). The string is copied. */
void dq_log_redact(const char *secret);

/* Copy src into dst (size dstlen, always terminated) with every registered secret
 * replaced by "***". Used for anything that leaves the process: logs, event text,
 * error strings put into events. Returns dst. */
char *dq_redact(const char *src, char *dst, size_t dstlen);

/* Forget every registered secret (tests). */
void dq_log_redact_clear(void);

void dq_log_write(dq_log_level level, const char *file, int line, const char *fmt, ...)
    DQ_PRINTF(4, 5);
void dq_log_vwrite(dq_log_level level, const char *file, int line, const char *fmt, va_list ap);

#define dq_debug(...) dq_log_write(DQ_LOG_DEBUG, __FILE__, __LINE__, __VA_ARGS__)
#define dq_info(...) dq_log_write(DQ_LOG_INFO, __FILE__, __LINE__, __VA_ARGS__)
#define dq_warn(...) dq_log_write(DQ_LOG_WARN, __FILE__, __LINE__, __VA_ARGS__)
#define dq_error(...) dq_log_write(DQ_LOG_ERROR, __FILE__, __LINE__, __VA_ARGS__)

#endif
