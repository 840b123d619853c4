/* obx-configdoc: the configuration reference, generated from the key table of
 * relay/core/config.c (obx_config_keys), so that the documentation cannot
 * drift from what the programs accept. It writes
 *   docs/configuration.md        both programs' keys, one section each
 *   docs/man/outbox-relay.1      the relay's command line
 *   docs/man/outbox-relay.conf.5 the relay's keys
 *   docs/man/obx-consumer.conf.5 the consumer runner's keys
 *
 * Regenerate after changing a key, its doc line or the command line below
 * (the build does not install this program):
 *   ninja -C BUILD obx-configdoc && BUILD/obx-configdoc -o .    (from the source root)
 * and commit the result. The unit test unit-configdoc runs
 *   obx-configdoc -o BUILD/configdoc --check SOURCE_ROOT
 * which writes the files under BUILD/configdoc and fails, naming the file and
 * its first differing line, when the committed ones differ. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"

typedef struct {
    const char *path; /* relative to the output or source root */
    void (*write)(FILE *f);
} doc_file_t;

/* outbox-relay's command line, as relay/relayd/main.c parses it. */
static const struct {
    const char *flags, *arg, *text;
} options[] = {
    {"-c, --config", "FILE", "The configuration file (libconfig syntax; see outbox-relay.conf(5)). Required."},
    {"--check", NULL, "Validate the configuration, connect to PostgreSQL and Kafka, check the outbox "
                      "table and the role's privileges, fetch the metadata of every topic the relay "
                      "would publish to (each route's, and those the newest rows resolve to: their "
                      "topic column or relay.topic_pattern) and report each as ok, missing or denied "
                      "(no topic is created by asking), then exit 0 (ok) or 1."},
    {"migrate", NULL, "Apply the schema (the outbox and the consumers' inbox tables; idempotent) and exit."},
    {"health", NULL, "Judge the running relay by the record it rewrites about once a second in health.file: "
                     "print one line and exit 0 when its loop turned, PostgreSQL answered and, for the "
                     "leader, a Kafka broker was up within health.max_age_s; exit 1 when not (or when the "
                     "relay is not running), 2 when health.file is not set."},
    {"health --live", NULL, "Only that the loop turns: a liveness probe (a restart can help)."},
    {"health --ready", NULL, "The loop and PostgreSQL, not Kafka: a readiness probe that a broker outage "
                             "does not fail (the service keeps writing its outbox meanwhile)."},
    {"-h, --help", NULL, "Print the usage and exit."},
    {"-V, --version", NULL, "Print the version and those of librdkafka and libpq, and exit."},
};

static const char *type_text(const obx_config_key_t *k) {
    switch (k->type) {
    case OBX_KEY_INT: return "integer";
    case OBX_KEY_STR: return "string";
    case OBX_KEY_ENUM: return "enum";
    case OBX_KEY_TOPICS: return "list of strings";
    case OBX_KEY_ROUTES: return "list of groups";
    default: return "string";
    }
}

static void range_text(const obx_config_key_t *k, char *buf, size_t size) {
    if (k->type == OBX_KEY_INT)
        snprintf(buf, size, "%lld..%lld", k->min, k->max);
    else if (k->type == OBX_KEY_ENUM)
        snprintf(buf, size, "%s", k->values);
    else if (k->type == OBX_KEY_TOPICS)
        snprintf(buf, size, "Kafka topic names");
    else
        buf[0] = '\0';
}

static void default_text(const obx_config_key_t *k, char *buf, size_t size) {
    if (k->type == OBX_KEY_INT)
        snprintf(buf, size, "%lld", k->def_i);
    else if (k->type == OBX_KEY_STR && k->def_s && *k->def_s)
        snprintf(buf, size, "\"%s\"", k->def_s);
    else
        snprintf(buf, size, "%s", k->def_s ? k->def_s : ""); /* "": no default */
}

static const char *key_text(const obx_config_key_t *k, char *buf, size_t size) {
    if (!k->name)
        return k->group;
    snprintf(buf, size, "%s.%s", k->group, k->name);
    return buf;
}

/* What the kafka group means for program, beyond the table's rows: keep in
 * step with relay/relayd/producer.c and relay/dedup/runner.c. */
static const char *kafka_text(obx_program_t program) {
    if (program == OBX_PROG_RELAY)
        return "Every key of the kafka group is a librdkafka property with \"_\" read as \".\" "
               "(linger_ms is linger.ms); values may be strings, numbers or booleans. Properties that "
               "librdkafka documents as a consumer's are refused. The relay needs an idempotent "
               "producer: enable_idempotence must stay true, acks must be all (-1), "
               "max_in_flight_requests_per_connection at most 5, and transactional_id is refused. "
               "Its defaults differ from librdkafka's in message.timeout.ms (0: infinite, so an "
               "outage delays messages instead of failing them), linger.ms (0) and "
               "socket.nagle.disable (true).";
    return "Every key of the kafka group is a librdkafka property with \"_\" read as \".\" "
           "(session_timeout_ms is session.timeout.ms); values may be strings, numbers or booleans. "
           "Properties that librdkafka documents as a producer's are refused. The runner forces "
           "enable.auto.commit=false (offsets are stored in PostgreSQL with the effects) and "
           "auto.offset.reset=earliest, and sets fetch.wait.max.ms=100 unless the group does.";
}

static const char *program_title(obx_program_t program) {
    return program == OBX_PROG_RELAY ? "outbox-relay" : "Consumer runner (obx_runner_main)";
}

/* ---- markdown ---------------------------------------------------------- */

static void md_table(FILE *f, obx_program_t program) {
    size_t n;
    const obx_config_key_t *keys = obx_config_keys(&n);

    fputs("| key | type | range | default | reloadable | required | description |\n"
          "|---|---|---|---|---|---|---|\n", f);
    for (size_t i = 0; i < n; i++) {
        const obx_config_key_t *k = &keys[i];
        char name[128], range[128], def[128];
        if (!(k->programs & program))
            continue;
        range_text(k, range, sizeof range);
        default_text(k, def, sizeof def);
        fprintf(f, "| `%s` | %s | %s | %s%s%s | %s | %s | %s |\n", key_text(k, name, sizeof name),
                type_text(k), range, *def ? "`" : "", def, *def ? "`" : "", k->reload ? "yes" : "no",
                k->required ? "yes" : "no", k->doc);
    }
}

static void md_section(FILE *f, obx_program_t program, const char *example) {
    fprintf(f, "\n## %s\n\nExample with every key: [`%s`](../%s); man page: %s.\n\n", program_title(program),
            example, example,
            program == OBX_PROG_RELAY ? "outbox-relay.conf(5)" : "obx-consumer.conf(5)");
    md_table(f, program);
    fprintf(f, "\n%s\n", kafka_text(program));
}

static void write_markdown(FILE *f) {
    fputs("<!-- Generated by relay/tools/configdoc.c from the key table in relay/core/config.c:\n"
          "     do not edit; that file says how to regenerate. -->\n"
          "# Configuration reference\n\n"
          "outbox-relay and the consumer runner (the programs built on `obx_runner_main`, such as\n"
          "obx-stock-consumer) each read one file in libconfig syntax: groups such as\n"
          "`relay: { batch_size = 500; };`. Each program reads its own keys: unknown keys, wrong\n"
          "types, values out of range, missing required keys and the other program's keys are\n"
          "refused with `FILE:LINE: reason` and exit code 2. Keys marked reloadable are applied\n"
          "on SIGHUP; a change to any other key is logged as needing a restart.\n", f);
    md_section(f, OBX_PROG_RELAY, "config/outbox-relay.conf");
    md_section(f, OBX_PROG_CONSUMER, "config/consumer.conf");
}

/* ---- roff (man(7)) ----------------------------------------------------- */

/* Text with roff's escapes: backslashes, and minus signs kept as such. */
static void roff_text(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\e", f);
        else if (*s == '-')
            fputs("\\-", f);
        else
            fputc(*s, f);
    }
}

/* Text as a roff text line, without a leading control character. */
static void roff_line(FILE *f, const char *s) {
    if (*s == '.' || *s == '\'')
        fputs("\\&", f);
    roff_text(f, s);
    fputc('\n', f);
}

static void roff_header(FILE *f, const char *name, int section, const char *what) {
    fputs(".\\\" Generated by relay/tools/configdoc.c: do not edit; that file says how to regenerate.\n.TH ", f);
    for (const char *c = name; *c; c++)
        fputc(*c >= 'a' && *c <= 'z' ? *c - 'a' + 'A' : *c, f);
    fprintf(f, " %d \"\" \"outbox-relay %s\" \"%s\"\n.nh\n.SH NAME\n%s \\- ", section, OBX_VERSION,
            section == 1 ? "User Commands" : "File Formats", name);
    roff_line(f, what);
}

static void write_relay_1(FILE *f) {
    roff_header(f, "outbox-relay", 1, "publish the rows of a PostgreSQL outbox table to Kafka");
    fputs(".SH SYNOPSIS\n.B outbox-relay\n.B \\-c\n.I FILE\n.RB [ \\-\\-check | migrate | \"health \" [ \\-\\-live | \\-\\-ready ]]\n"
          ".br\n.B outbox-relay\n.RB \\-\\-help | \\-\\-version\n.SH DESCRIPTION\n", f);
    roff_line(f, "outbox-relay publishes the rows of a PostgreSQL outbox table to Kafka, at least once and "
                 "in per-aggregate order, and marks each row sent once the broker acknowledged it. "
                 "Several relays may run against one database: one leads, the others stand by.");
    fputs(".SH OPTIONS\n", f);
    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++) {
        fputs(".TP\n.BI \"", f);
        roff_text(f, options[i].flags);
        fprintf(f, "%s\" \"%s\"\n", options[i].arg ? " " : "", options[i].arg ? options[i].arg : "");
        roff_line(f, options[i].text);
    }
    fputs(".SH SIGNALS\n", f);
    roff_line(f, "SIGTERM and SIGINT stop gracefully, waiting up to relay.shutdown_timeout_ms for "
                 "acknowledgements; a second one exits at once. SIGHUP reloads the keys marked "
                 "reloadable in outbox-relay.conf(5). Under systemd (Type=notify) the relay sends READY=1 once "
                 "started, STATUS= with its role and state, STOPPING=1 on shutdown and, when WatchdogSec= "
                 "is set, WATCHDOG=1 pings from its loop.");
    fputs(".SH EXIT STATUS\n", f);
    roff_line(f, "0 ok, 1 runtime error (or a failed --check or health, or a loop stuck for "
                 "health.stuck_timeout_s), 2 bad configuration or usage "
                 "(configuration errors are printed as FILE:LINE: reason).");
    fputs(".SH FILES\n.I /etc/outbox-relay/outbox-relay.conf\n.SH SEE ALSO\n"
          ".BR outbox-relay.conf (5),\n.BR obx-consumer.conf (5)\n", f);
}

static void roff_key(FILE *f, const obx_config_key_t *k) {
    char range[128], def[128], line[512];
    range_text(k, range, sizeof range);
    default_text(k, def, sizeof def);
    fputs(".TP\n.B ", f);
    roff_line(f, k->name ? k->name : k->group);
    snprintf(line, sizeof line, "%s%s%s; %s%s%s%s.", type_text(k), *range ? ", " : "", range,
             *def ? "default " : "no default", def, k->reload ? "; reloadable" : "",
             k->required ? "; required" : "");
    roff_line(f, line);
    fputs(".br\n", f);
    roff_line(f, k->doc);
}

static void roff_keys(FILE *f, obx_program_t program) {
    size_t n;
    const obx_config_key_t *keys = obx_config_keys(&n);
    const char *group = "";
    for (size_t i = 0; i < n; i++) {
        if (!(keys[i].programs & program))
            continue;
        if (strcmp(group, keys[i].group) != 0) {
            group = keys[i].group;
            fprintf(f, ".SS %s\n", group);
            if (strcmp(group, "kafka") == 0)
                roff_line(f, kafka_text(program));
        }
        roff_key(f, &keys[i]);
    }
}

static void write_conf_5(FILE *f, obx_program_t program) {
    const int relay = program == OBX_PROG_RELAY;
    roff_header(f, relay ? "outbox-relay.conf" : "obx-consumer.conf", 5,
                relay ? "configuration of outbox-relay"
                      : "configuration of a consuming service built on obx_runner_main");
    fputs(".SH SYNOPSIS\n", f);
    fputs(relay ? ".I /etc/outbox-relay/outbox-relay.conf\n" : ".I /etc/outbox-relay/consumer.conf\n", f);
    fputs(".SH DESCRIPTION\n", f);
    roff_line(f, "One file in libconfig syntax, of groups such as: log: { level = \"info\"; }; "
                 "Unknown keys, wrong types, values out of range, missing required keys and the keys "
                 "of the other program are refused with FILE:LINE: reason and exit code 2. Keys marked "
                 "reloadable are applied on SIGHUP; the others need a restart.");
    if (!relay) {
        fputs(".SH COMMAND LINE\n", f);
        roff_line(f, "A consuming service built on obx_runner_main takes: -c FILE (this file; required); "
                     "--check (validate the file, connect to PostgreSQL and check the inbox tables and "
                     "privileges, connect to Kafka and check that every subscribed topic exists; one line "
                     "per check on stdout, then exit 0 or 1); -h, --help; -V, --version. SIGTERM and SIGINT "
                     "stop it gracefully, SIGHUP reloads the reloadable keys. Exit status: 0 ok, 1 runtime "
                     "error or a failed check, 2 bad configuration or usage.");
    }
    fputs(".SH KEYS\n", f);
    roff_keys(f, program);
    fputs(".SH SEE ALSO\n", f);
    fputs(relay ? ".BR outbox-relay (1),\n.BR obx-consumer.conf (5)\n"
                : ".BR outbox-relay.conf (5),\n.BR outbox-relay (1)\n", f);
}

static void write_relay_conf(FILE *f) { write_conf_5(f, OBX_PROG_RELAY); }
static void write_consumer_conf(FILE *f) { write_conf_5(f, OBX_PROG_CONSUMER); }

static const doc_file_t files[] = {
    {"docs/configuration.md", write_markdown},
    {"docs/man/outbox-relay.1", write_relay_1},
    {"docs/man/outbox-relay.conf.5", write_relay_conf},
    {"docs/man/obx-consumer.conf.5", write_consumer_conf},
};

/* ---- output and comparison --------------------------------------------- */

static char *generate(const doc_file_t *d) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        perror("open_memstream");
        exit(1);
    }
    d->write(f);
    fclose(f);
    return buf;
}

static int write_under(const char *root, const char *rel, const char *text) {
    char path[4096], dir[4096];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", root, rel);
    /* the output root and its docs/man below it */
    snprintf(dir, sizeof dir, "%s/docs", root);
    mkdir(root, 0755);
    mkdir(dir, 0755);
    snprintf(dir, sizeof dir, "%s/docs/man", root);
    mkdir(dir, 0755);
    f = fopen(path, "w");
    if (!f || fputs(text, f) == EOF || fclose(f) != 0) {
        fprintf(stderr, "obx-configdoc: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

static char *read_all(const char *path) {
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t len = 0, n;
    char chunk[4096];
    FILE *m;
    if (!f)
        return NULL;
    m = open_memstream(&buf, &len);
    while (m && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        fwrite(chunk, 1, n, m);
    if (m)
        fclose(m);
    fclose(f);
    return buf;
}

/* Reports the first line where committed and generated differ; 0 when equal. */
static int compare(const char *rel, const char *committed, const char *generated) {
    int line = 1;
    const char *a = committed, *b = generated;
    while (*a && *a == *b) {
        line += *a == '\n';
        a++, b++;
    }
    if (!*a && !*b)
        return 0;
    while (a > committed && a[-1] != '\n')
        a--, b--;
    fprintf(stderr, "%s:%d: differs from the generated text\n  committed: %.*s\n  generated: %.*s\n", rel,
            line, (int)strcspn(a, "\n"), a, (int)strcspn(b, "\n"), b);
    return 1;
}

static int check_file(const char *src, const doc_file_t *d, const char *generated) {
    char path[4096];
    char *committed;
    int rc;
    snprintf(path, sizeof path, "%s/%s", src, d->path);
    committed = read_all(path);
    if (!committed) {
        fprintf(stderr, "%s: cannot read: %s\n", path, strerror(errno));
        return 1;
    }
    rc = compare(d->path, committed, generated);
    free(committed);
    return rc;
}

int main(int argc, char **argv) {
    const char *out = NULL, *src = NULL;
    int failed = 0;

    for (int i = 1; i + 1 < argc && argc % 2; i += 2) {
        if (strcmp(argv[i], "-o") == 0)
            out = argv[i + 1];
        else if (strcmp(argv[i], "--check") == 0)
            src = argv[i + 1];
        else
            out = NULL, i = argc;
    }
    if (!out) {
        fprintf(stderr, "usage: %s -o OUTDIR [--check SOURCE_ROOT]\n", argv[0]);
        return 2;
    }
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *text = generate(&files[i]);
        failed |= write_under(out, files[i].path, text) != 0;
        if (src)
            failed |= check_file(src, &files[i], text);
        free(text);
    }
    if (failed && src)
        fprintf(stderr, "regenerate: cd %s && %s -o . (then commit the files)\n", src, argv[0]);
    return failed ? 1 : 0;
}
