/* The alert recipes of docs/monitoring.md against real log output: each
 * scenario provokes its alerts' conditions with a real relay, consumer,
 * PostgreSQL and Kafka mock, then the recipes read from the doc (journald's
 * grep -E pattern run with regcomp, the LogQL queries and the VRL condition
 * evaluated on the parsed logfmt fields) must select lines of its log, and
 * none of a healthy run's. Stops PostgreSQL: runs alone. */
#include <check.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "shop.h"

#define MAX_RECIPES 32
#define MAX_LOKI 3

/* One alert of the doc: its journald pattern, LogQL queries, VRL condition. */
typedef struct {
    char name[64];
    char grep[512];
    char loki[MAX_LOKI][768];
    int nloki;
    char vrl[512];
} recipe_t;

static recipe_t recipes[MAX_RECIPES];
static int nrecipes;

/* Alerts some scenario below provokes; the healthy run checks that the doc
 * has no other, so that a new recipe comes with its scenario. */
static const char *const provoked[] = {
    "relay_lagging", "relay_not_leading", "relay_blocked", "row_parked", "relay_disconnected",
    "partition_stalled", "kafka_fatal_error", "loop_stuck", "postgres_unresponsive",
    "topic_not_authorized", "message_parked", "batch_rolled_back", "consumer_lagging",
    "retention_failed", "retention_behind", "partition_ahead_missing",
};
/* A relay bug: no fault provokes it, so only its silence is checked. */
static const char *const unprovokable[] = {"unexpected_delivery_report"};

/* The first code span of line: its text at *from, *len long; 0 when none. */
static int code_span(const char *line, const char **from, size_t *len) {
    const char *a = strchr(line, '`'), *b = a ? strchr(a + 1, '`') : NULL;
    if (!b)
        return 0;
    *from = a + 1;
    *len = (size_t)(b - a - 1);
    return 1;
}

/* Files one line of an alert's block: "- journald:", "- Loki:" (and its
 * continuation lines), "- Vector:". */
static void add_recipe_line(recipe_t *r, const char *line, char *item) {
    const char *span, *q;
    size_t len;
    if (strncmp(line, "- ", 2) == 0)
        *item = strncmp(line, "- journald:", 11) == 0 ? 'j' : strncmp(line, "- Loki:", 7) == 0 ? 'l'
              : strncmp(line, "- Vector:", 9) == 0 ? 'v' : 0;
    else if (strncmp(line, "  ", 2) != 0)
        *item = 0;
    for (const char *p = line; code_span(p, &span, &len); p = span + len + 1) {
        if (*item == 'j' && (q = strstr(span, "grep -")) && q < span + len && (q = strchr(q, '\'')))
            snprintf(r->grep, sizeof r->grep, "%.*s", (int)strcspn(q + 1, "'"), q + 1);
        else if (*item == 'l' && r->nloki < MAX_LOKI && strstr(span, "| logfmt") && strstr(span, "| logfmt") < span + len)
            snprintf(r->loki[r->nloki++], sizeof r->loki[0], "%.*s", (int)len, span);
        else if (*item == 'v' && !r->vrl[0])
            snprintf(r->vrl, sizeof r->vrl, "%.*s", (int)len, span);
        if (*item == 'j' || *item == 'v')
            break; /* later spans are prose */
    }
}

/* Reads the "## Alert suggestions" section: an alert starts at a line
 * "**name** (severity): ...". */
static void load_recipes(void) {
    const char *path = th_src("docs/monitoring.md");
    char line[2048], item = 0;
    int in_section = 0;
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot read %s", path);
    nrecipes = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "## ", 3) == 0)
            in_section = strcmp(line, "## Alert suggestions") == 0;
        else if (in_section && strncmp(line, "**", 2) == 0) {
            ck_assert_int_lt(nrecipes, MAX_RECIPES);
            memset(&recipes[nrecipes], 0, sizeof recipes[0]);
            snprintf(recipes[nrecipes].name, sizeof recipes[0].name, "%.*s", (int)strcspn(line + 2, "*"), line + 2);
            nrecipes++;
            item = 0;
        } else if (in_section && nrecipes > 0) {
            add_recipe_line(&recipes[nrecipes - 1], line, &item);
        }
    }
    fclose(f);
    ck_assert_msg(nrecipes >= 10, "%s: only %d alerts in \"## Alert suggestions\"", path, nrecipes);
    for (int i = 0; i < nrecipes; i++)
        ck_assert_msg(recipes[i].grep[0] && recipes[i].nloki > 0 && recipes[i].vrl[0],
                      "%s: alert %s lacks a journald grep -E pattern, a LogQL query or a VRL condition", path,
                      recipes[i].name);
}

static const recipe_t *recipe(const char *name) {
    if (nrecipes == 0)
        load_recipes();
    for (int i = 0; i < nrecipes; i++)
        if (strcmp(recipes[i].name, name) == 0)
            return &recipes[i];
    ck_abort_msg("docs/monitoring.md has no alert **%s** under \"Alert suggestions\"", name);
    return NULL;
}

/* ---- a line's logfmt fields, and the LogQL and VRL subsets on them -------- */

typedef struct {
    char k[64], v[512];
} kv_t;

typedef struct {
    kv_t kv[64];
    int n;
} fields_t;

static void parse_logfmt(const char *line, fields_t *f) {
    const char *p = line;
    f->n = 0;
    while (*p && f->n < 64) {
        kv_t *kv = &f->kv[f->n++];
        size_t kl, vl = 0;
        while (*p == ' ')
            p++;
        kl = strcspn(p, "= ");
        snprintf(kv->k, sizeof kv->k, "%.*s", (int)kl, p);
        p += kl;
        if (*p != '=') {
            snprintf(kv->v, sizeof kv->v, "true"); /* a standalone key, as parse_logfmt has it */
            continue;
        }
        if (*++p == '"') {
            for (p++; *p && *p != '"'; p++) {
                if (*p == '\\' && p[1])
                    p++;
                if (vl + 1 < sizeof kv->v)
                    kv->v[vl++] = *p == 'n' && p[-1] == '\\' ? '\n' : *p;
            }
            p += *p == '"';
        } else {
            while (*p && *p != ' ')
                if (vl + 1 < sizeof kv->v)
                    kv->v[vl++] = *p++;
                else
                    p++;
        }
        kv->v[vl] = '\0';
    }
}

static const char *field(const fields_t *f, const char *key) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->kv[i].k, key) == 0)
            return f->kv[i].v;
    return NULL;
}

static int is_number(const char *s, double *out) {
    char *end;
    if (!s || !*s)
        return 0;
    *out = strtod(s, &end);
    return *end == '\0';
}

/* key op value on the fields. A quoted value compares as a string (= or ==,
 * !=), else as a number; an absent or non-numeric field is dflt when given
 * (VRL's `to_int(...) ?? 0`), else fails the comparison (LogQL). */
static int holds(const fields_t *f, const char *key, const char *op, const char *val, const double *dflt) {
    const char *have = field(f, key);
    double a, b;
    if (val[0] == '"') {
        size_t n = strlen(val) - 2;
        int eq = have && strlen(have) == n && strncmp(have, val + 1, n) == 0;
        ck_assert_msg(!strcmp(op, "!=") || !strcmp(op, "=") || !strcmp(op, "=="), "operator %s on a string", op);
        return strcmp(op, "!=") == 0 ? !eq : eq;
    }
    ck_assert_msg(is_number(val, &b), "not a number: %s", val);
    if (!is_number(have, &a)) {
        if (!dflt)
            return 0;
        a = *dflt;
    }
    return !strcmp(op, ">") ? a > b : !strcmp(op, ">=") ? a >= b : !strcmp(op, "<") ? a < b
         : !strcmp(op, "<=") ? a <= b : !strcmp(op, "!=") ? a != b : a == b;
}

/* Splits s in place at every sep; returns the parts. */
static int split(char *s, const char *sep, char **parts, int max) {
    int n = 0;
    for (char *at; n < max - 1 && (at = strstr(s, sep)) != NULL; s = at + strlen(sep)) {
        *at = '\0';
        parts[n++] = s;
    }
    parts[n++] = s;
    return n;
}

/* The pipeline after `| logfmt` (up to a range `[...]`): label filters
 * `k="v"`, `k!="v"`, `k > N` (and >=, <, <=), alternatives joined by `or`,
 * and `unwrap k` (k must be a number). An unwrapped range's comparison at
 * the end (`min_over_time(... | unwrap k [30s]) by (unit) > 60`) holds for
 * every line of a window that fires, so it applies to the line's k. */
static int logql_selects(const char *query, const fields_t *f) {
    char q[768], *parts[16], *alts[4], key[64], op[3], val[512], *range;
    const char *tail = strrchr(query, ')');
    int n;
    snprintf(q, sizeof q, "%s", strstr(query, "| logfmt") + strlen("| logfmt"));
    if ((range = strstr(q, " [")) != NULL)
        *range = '\0';
    n = split(q, " | ", parts, 16);
    for (int i = 0; i < n; i++) {
        int any = 0, na;
        double num;
        if (!*parts[i])
            continue;
        if (sscanf(parts[i], "unwrap %63s", key) == 1) {
            if (!is_number(field(f, key), &num) ||
                (tail && sscanf(tail + 1, " %2[=!<>] %511s", op, val) == 2 && !holds(f, key, op, val, NULL)))
                return 0;
            continue;
        }
        na = split(parts[i], " or ", alts, 4);
        for (int j = 0; j < na && !any; j++) {
            ck_assert_msg(sscanf(alts[j], " %63[a-z_] %2[=!<>] %511[^\n]", key, op, val) == 3,
                          "LogQL stage this test cannot evaluate: %s (in %s)", alts[j], query);
            any = holds(f, key, op, val, NULL);
        }
        if (!any)
            return 0;
    }
    return 1;
}

/* Conditions joined by || and &&: `.k == "v"`, `.k != "v"`,
 * `(to_int(.k) ?? D) > N` (and >=, <, <=). */
static int vrl_selects(const char *cond, const fields_t *f) {
    char c[512], *ors[8], *ands[8], key[64], op[3], val[512];
    int no;
    snprintf(c, sizeof c, "%s", cond);
    no = split(c, " || ", ors, 8);
    for (int i = 0; i < no; i++) {
        int all = 1, na = split(ors[i], " && ", ands, 8);
        for (int j = 0; j < na && all; j++) {
            double dflt;
            if (sscanf(ands[j], "(to_int(.%63[a-z_]) ?? %lf) %2[=!<>] %511[^\n]", key, &dflt, op, val) == 4)
                all = holds(f, key, op, val, &dflt);
            else if (sscanf(ands[j], ".%63[a-z_] %2[=!<>] %511[^\n]", key, op, val) == 3)
                all = holds(f, key, op, val, NULL);
            else
                ck_abort_msg("VRL condition this test cannot evaluate: %s (in %s)", ands[j], cond);
        }
        if (all)
            return 1;
    }
    return 0;
}

/* ---- applying an alert's recipes to a log -------------------------------- */

/* Recipe i of r: 0 the journald pattern, then the LogQL queries, then VRL. */
static int nkinds(const recipe_t *r) { return r->nloki + 2; }

static const char *kind_name(const recipe_t *r, int i) {
    return i == 0 ? "journald grep -E" : i <= r->nloki ? "LogQL" : "VRL";
}

static const char *kind_text(const recipe_t *r, int i) {
    return i == 0 ? r->grep : i <= r->nloki ? r->loki[i - 1] : r->vrl;
}

typedef struct {
    int count[MAX_LOKI + 2];
    int first_line[MAX_LOKI + 2];
    char first[MAX_LOKI + 2][1024];
    char path[512];
} hits_t;

/* Applies every recipe of r to the lines of DIR/log numbered from on (1-based). */
static void apply(const th_ctx_t *t, const char *log, const recipe_t *r, int from, hits_t *h) {
    char line[8192];
    regex_t re;
    fields_t *f = malloc(sizeof *f);
    FILE *fp;
    int rc, no = 0;

    memset(h, 0, sizeof *h);
    snprintf(h->path, sizeof h->path, "%s/%s", t->dir, log);
    rc = regcomp(&re, r->grep, REG_EXTENDED | REG_NOSUB);
    ck_assert_msg(rc == 0, "alert %s: journald pattern '%s' does not compile (grep -E)", r->name, r->grep);
    fp = fopen(h->path, "r");
    ck_assert_msg(fp != NULL, "alert %s: no log %s", r->name, h->path);
    while (fgets(line, sizeof line, fp)) {
        if (++no < from)
            continue;
        line[strcspn(line, "\n")] = '\0';
        parse_logfmt(line, f);
        for (int i = 0; i < nkinds(r); i++) {
            int sel = i == 0 ? regexec(&re, line, 0, NULL, 0) == 0
                    : i <= r->nloki ? logql_selects(r->loki[i - 1], f) : vrl_selects(r->vrl, f);
            if (sel && h->count[i]++ == 0) {
                h->first_line[i] = no;
                snprintf(h->first[i], sizeof h->first[i], "%.1000s", line);
            }
        }
    }
    fclose(fp);
    regfree(&re);
    free(f);
}

/* Each recipe of the alert selects a line of DIR/log from line `from` on. */
static void fires(const th_ctx_t *t, const char *log, const char *name, int from) {
    const recipe_t *r = recipe(name);
    hits_t h;
    apply(t, log, r, from, &h);
    for (int i = 0; i < nkinds(r); i++)
        ck_assert_msg(h.count[i] > 0, "alert %s: the %s recipe `%s` selects no line of %s (from line %d)", name,
                      kind_name(r, i), kind_text(r, i), h.path, from);
    fprintf(stderr, "alert %s: %d line(s) of %s (journald), %d (LogQL), %d (VRL)\n", name, h.count[0], h.path,
            h.count[1], h.count[r->nloki + 1]);
}

/* No recipe of the alert selects a line of DIR/log from line `from` on. */
static void silent(const th_ctx_t *t, const char *log, const char *name, int from) {
    const recipe_t *r = recipe(name);
    hits_t h;
    apply(t, log, r, from, &h);
    for (int i = 0; i < nkinds(r); i++)
        ck_assert_msg(h.count[i] == 0, "alert %s: the %s recipe `%s` selects line %d of %s, where it must not: %s",
                      name, kind_name(r, i), kind_text(r, i), h.first_line[i], h.path, h.first[i]);
}

/* ---- scenarios ------------------------------------------------------------ */

typedef struct {
    const th_ctx_t *t;
    const char *log, *needle, *key; /* key NULL: count lines with needle */
    long long at_least;
} reach_t;

static int reached(void *p) {
    const reach_t *a = p;
    return (a->key ? th_file_field(a->t, a->log, a->needle, a->key) : th_file_count(a->t, a->log, a->needle)) >=
           a->at_least;
}

/* Waits until DIR/log has at_least lines with needle or, with key, until
 * key of its last line with needle is at_least. */
static void wait_reach(const th_ctx_t *t, const char *log, const char *needle, const char *key, long long at_least) {
    reach_t a = {t, log, needle, key, at_least};
    ck_assert_msg(th_wait(reached, &a, 60000), "%s/%s: never %lld %s%s%s", t->dir, log, at_least,
                  key ? key : "lines with ", key ? " on the last line with " : "", needle);
}

/* Number of the first line of DIR/log holding needle (1-based). */
static int line_of(const th_ctx_t *t, const char *log, const char *needle) {
    char path[512], line[8192];
    int no = 0;
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", t->dir, log);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof line, f)) {
        no++;
        if (strstr(line, needle))
            break;
    }
    fclose(f);
    return no;
}

static void mock_db(th_ctx_t *t, th_mock_t *m, const char *name, int partitions) {
    char topic[128];
    th_mock_start(m, 1);
    th_setup(t, name);
    snprintf(topic, sizeof topic, "%s.order", t->topic_prefix);
    ck_assert_int_eq(rd_kafka_mock_topic_create(m->mc, topic, partitions, 1), 0);
}

static pid_t relay_with(th_ctx_t *t, const th_mock_t *m, const char *relay_extra, const char *kafka_extra) {
    return th_relay_start(t, th_config(t, "relay.conf", m->bootstrap, relay_extra, kafka_extra));
}

static void finish(th_ctx_t *t, th_mock_t *m, pid_t relay) {
    th_drain(t, 60000);
    th_stop(relay, SIGTERM, 20000, 0);
    th_mock_stop(m);
}

/* Orders first.. (n of them) of event_type for the stock consumer. */
static void orders(PGconn *c, int first, int n, const char *event_type) {
    char sql[1024];
    snprintf(sql, sizeof sql,
             "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
             " SELECT 'order', o::text, '%s', convert_to(jsonb_build_object('order_id', o, 'sku', 'sku-1',"
             " 'qty', 1, 'amount_cents', 100)::text, 'UTF8') FROM generate_series(%d, %d) o ORDER BY o",
             event_type, first, first + n - 1);
    th_exec(c, sql);
}

/* The relay and the stock consumer on a shop database; returns the consumer. */
static pid_t shop_start(th_ctx_t *t, th_mock_t *m, const char *name, PGconn **c, pid_t *relay) {
    char conf[512];
    mock_db(t, m, name, 1);
    *c = th_connect(t);
    th_apply_sql(*c, "schema/003_shop.sql");
    th_exec(*c, "INSERT INTO shop_stock VALUES ('sku-1', 1000000, 1000000)");
    *relay = relay_with(t, m, "poll_interval_ms = 100;", "");
    snprintf(conf, sizeof conf, "%s", th_consumer_conf(t, "stock.conf", m->bootstrap, "stock", "order"));
    return th_spawn(t, "obx-stock-consumer", conf, "stock.log");
}

static int listed(const char *name, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], name) == 0)
            return 1;
    return 0;
}

/* A relay and a consumer doing their work: no alert fires, and the
 * leader's heartbeat (whose absence is an alert) is there. */
START_TEST(healthy_run_fires_no_alert) {
    th_ctx_t t;
    th_mock_t m;
    pid_t relay, stock;
    PGconn *c;

    stock = shop_start(&t, &m, "alerts_healthy", &c, &relay);
    orders(c, 1, 300, "OrderPlaced");
    th_wait_count(&t, "SELECT count(*) FROM shop_stock_moves", 300, 60000);
    wait_reach(&t, "stock.log", " applied=300 ", NULL, 3); /* caught up, for a few intervals */
    ck_assert_int_eq(th_file_field(&t, "stock.log", " applied=300 ", "lag"), 0);
    th_drain(&t, 60000);
    th_stop(stock, SIGTERM, 20000, 0);
    th_stop(relay, SIGTERM, 20000, 0);
    PQfinish(c);
    th_mock_stop(&m);

    recipe("row_parked"); /* loads the doc */
    for (int i = 0; i < nrecipes; i++) {
        const char *name = recipes[i].name;
        ck_assert_msg(listed(name, provoked, sizeof provoked / sizeof *provoked) ||
                          listed(name, unprovokable, sizeof unprovokable / sizeof *unprovokable),
                      "docs/monitoring.md: alert %s has no scenario in tests/integration/test_alerts.c", name);
        if (strcmp(name, "relay_not_leading") == 0) {
            fires(&t, "relay.log", name, 1);
            continue;
        }
        silent(&t, "relay.log", name, 1);
        silent(&t, "stock.log", name, 1);
    }
}
END_TEST

/* A row the relay can never publish (no key): parked under on_failure =
 * "park", blocking the line under "block". */
START_TEST(row_failures) {
    th_ctx_t t;
    th_mock_t m;
    PGconn *c;
    pid_t relay;
    int from;

    mock_db(&t, &m, "alerts_rows", 2);
    c = th_connect(&t);
    relay = relay_with(&t, &m, "poll_interval_ms = 100;", "");
    th_exec(c, "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload) VALUES ('order', NULL, 'X', 'x')");
    th_wait_log(&t, "event=row_parked", 30000);
    th_stop(relay, SIGTERM, 20000, 0);
    fires(&t, "relay.log", "row_parked", 1);

    from = th_file_count(&t, "relay.log", "") + 1;
    relay = relay_with(&t, &m, "poll_interval_ms = 100; on_failure = \"block\";", "");
    th_exec(c, "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload) VALUES ('order', NULL, 'X', 'x')");
    th_wait_log(&t, "state=blocked", 30000);
    fires(&t, "relay.log", "relay_blocked", from);
    th_exec(c, "UPDATE outbox SET aggregate_id = 'fixed' WHERE aggregate_id IS NULL AND parked_at IS NULL");
    PQfinish(c);
    finish(&t, &m, relay);
}
END_TEST

/* The only broker goes down with rows in flight and rows two minutes old
 * waiting (created_at set back: the age a two-minute outage would show). */
START_TEST(broker_down) {
    th_ctx_t t;
    th_mock_t m;
    PGconn *c;
    pid_t relay;

    mock_db(&t, &m, "alerts_broker", 2);
    relay = relay_with(&t, &m, "poll_interval_ms = 100;", "");
    ck_assert_int_eq(th_write(&t, 2, 20, 10, 50, "order"), 20);
    th_drain(&t, 30000);
    ck_assert_int_eq(rd_kafka_mock_broker_set_down(m.mc, 1), 0);
    c = th_connect(&t);
    th_exec(c, "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, created_at)"
               " SELECT 'order', 'late-' || g, 'OrderPlaced', '\\x01', now() - interval '2 minutes'"
               " FROM generate_series(1, 20) g");
    PQfinish(c);
    wait_reach(&t, "relay.log", "role=leader", "oldest_unsent_age_s", 61);
    wait_reach(&t, "relay.log", "event=stats", "stalled_partitions", 1);
    fires(&t, "relay.log", "relay_lagging", 1);
    fires(&t, "relay.log", "partition_stalled", 1);
    ck_assert_int_eq(rd_kafka_mock_broker_set_up(m.mc, 1), 0);
    th_check_published(&t, m.bootstrap, "order", 40);
    th_stop(relay, SIGTERM, 20000, 0);
    th_mock_stop(&m);
}
END_TEST

/* PostgreSQL stops: the relay says it is disconnected, and from its first
 * such line on no leader heartbeat comes. */
START_TEST(postgres_down) {
    th_ctx_t t;
    th_mock_t m;
    pid_t relay;
    int from, stats;

    mock_db(&t, &m, "alerts_pgdown", 2);
    relay = relay_with(&t, &m, "poll_interval_ms = 100;", "");
    th_wait_log(&t, "role=leader state=", 30000); /* a stats line */
    th_pg_ctl("stop");
    th_wait_log(&t, "state=disconnected", 30000);
    stats = th_file_count(&t, "relay.log", "event=stats");
    wait_reach(&t, "relay.log", "event=stats", NULL, stats + 3);
    wait_reach(&t, "relay.log", "event=postgres_connect_failed", NULL, 1);
    from = line_of(&t, "relay.log", "state=disconnected");
    th_pg_ctl("start");
    fires(&t, "relay.log", "relay_disconnected", 1);
    fires(&t, "relay.log", "relay_not_leading", 1);        /* before the outage */
    silent(&t, "relay.log", "relay_not_leading", from);    /* from the outage on: as a leader's absence */
    ck_assert_int_eq(th_write(&t, 2, 20, 10, 50, "order"), 20);
    finish(&t, &m, relay);
}
END_TEST

#define PRODUCE_API 0 /* Kafka protocol ApiKey of Produce */

/* An idempotence error the producer cannot recover from (one request in
 * flight: see test_faults.c on the mock's sequence checks). */
START_TEST(fatal_kafka_error) {
    th_ctx_t t;
    th_mock_t m;
    pid_t relay;

    mock_db(&t, &m, "alerts_fatal", 2);
    relay = relay_with(&t, &m, "", "max_in_flight_requests_per_connection = 1;");
    ck_assert_int_eq(th_write(&t, 2, 20, 10, 50, "order"), 20);
    th_drain(&t, 30000);
    rd_kafka_mock_push_request_errors(m.mc, PRODUCE_API, 1, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER);
    ck_assert_int_eq(th_write(&t, 2, 200, 10, 50, "order"), 200);
    th_wait_log(&t, "event=kafka_fatal_error", 30000);
    fires(&t, "relay.log", "kafka_fatal_error", 1);
    finish(&t, &m, relay);
}
END_TEST

/* The relay's principal may not write the topic; then the ACL is granted. */
START_TEST(topic_not_authorized) {
    th_ctx_t t;
    th_mock_t m;
    char topic[128];
    pid_t relay;

    mock_db(&t, &m, "alerts_acl", 2);
    snprintf(topic, sizeof topic, "%s.order", t.topic_prefix);
    rd_kafka_mock_topic_set_error(m.mc, topic, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    relay = relay_with(&t, &m, "poll_interval_ms = 100;", "");
    ck_assert_int_eq(th_write(&t, 2, 20, 10, 50, "order"), 20);
    th_wait_log(&t, "event=topic_not_authorized", 30000);
    fires(&t, "relay.log", "topic_not_authorized", 1);
    rd_kafka_mock_topic_set_error(m.mc, topic, RD_KAFKA_RESP_ERR_NO_ERROR);
    finish(&t, &m, relay);
}
END_TEST

static pid_t relay_retention(th_ctx_t *t, const th_mock_t *m, const char *retention) {
    return th_relay_start(t, th_config_group(t, "relay.conf", m->bootstrap, "poll_interval_ms = 100;", "retention",
                                             retention));
}

/* Rows marked sent ten minutes ago (an old table) deleted with keep_s = 1,
 * then a lock on the outbox held past the delete's lock_timeout; then the
 * outbox partitioned with one partition, which the writers took. */
START_TEST(retention_warnings) {
    th_ctx_t t;
    th_mock_t m;
    PGconn *c;
    pid_t relay;
    int from;

    mock_db(&t, &m, "alerts_retention", 2);
    c = th_connect(&t);
    th_exec(c, "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, sent_at)"
               " SELECT 'order', 'old-' || g, 'OrderPlaced', '\\x01', now() - interval '10 minutes'"
               " FROM generate_series(1, 20) g");
    relay = relay_retention(&t, &m, "keep_s = 1; interval_s = 1;");
    th_wait_log(&t, "event=retention_behind", 30000);
    fires(&t, "relay.log", "retention_behind", 1);
    th_exec(c, "BEGIN");
    th_exec(c, "LOCK TABLE outbox IN SHARE MODE"); /* the delete waits; claims do not */
    th_wait_log(&t, "event=retention_failed", 30000);
    th_exec(c, "COMMIT");
    fires(&t, "relay.log", "retention_failed", 1);
    th_stop(relay, SIGTERM, 20000, 0);

    /* With outbox.partition_rows set, the schema makes public.outbox
     * partitioned, one partition ahead. */
    from = th_file_count(&t, "relay.log", "") + 1;
    th_exec(c, "DROP TABLE outbox CASCADE");
    th_exec(c, "SET outbox.partition_rows = 100");
    th_apply_sql(c, "schema/001_outbox.sql");
    ck_assert_int_eq(th_write(&t, 2, 20, 10, 50, "order"), 20);
    relay = relay_retention(&t, &m, "mode = \"partitions\"; partition_rows = 100; interval_s = 1;");
    th_wait_log(&t, "event=partition_ahead_missing", 30000);
    fires(&t, "relay.log", "partition_ahead_missing", from);
    PQfinish(c);
    finish(&t, &m, relay);
}
END_TEST

/* Sends sig to the relay's PostgreSQL backends listed in pids ("1,2,3"). */
static void signal_backends(const char *pids, int sig) {
    for (const char *p = pids; *p; p += strcspn(p, ",") + (p[strcspn(p, ",")] == ',')) {
        ck_assert_int_eq(kill((pid_t)atol(p), sig), 0);
    }
}

typedef struct {
    const th_ctx_t *t;
    const char *except;
    char pids[256];
} backends_t;

/* The relays' backends, except those listed in except: comma-separated. */
static int backends_found(void *arg) {
    backends_t *b = arg;
    char sql[512];
    PGconn *c = th_connect(b->t);
    PGresult *r;
    snprintf(sql, sizeof sql,
             "SELECT COALESCE(string_agg(pid::text, ','), '') FROM pg_stat_activity WHERE datname = current_database()"
             " AND application_name = 'outbox-relay' AND pid::text <> ALL (string_to_array('%s', ','))",
             b->except);
    r = PQexec(c, sql);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    snprintf(b->pids, sizeof b->pids, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return b->pids[0] != '\0';
}

static void backends(const th_ctx_t *t, const char *except, char *out, size_t size) {
    backends_t b = {t, except, ""};
    ck_assert_msg(th_wait(backends_found, &b, 20000), "no relay backends besides %s", except);
    snprintf(out, size, "%s", b.pids);
}

/* Frozen backends (SIGSTOP) answer nothing: the standby's blocking lock
 * attempt stops its loop (loop_stuck, it exits), the leader's queries go
 * unanswered (postgres_unresponsive, it reconnects). As in test_health.c. */
START_TEST(health_events) {
    th_ctx_t t;
    th_mock_t m;
    char leader[256], standby[256];
    const char *conf;
    pid_t a, b;
    FILE *f;

    mock_db(&t, &m, "alerts_health", 2);
    conf = th_config(&t, "relay.conf", m.bootstrap, "poll_interval_ms = 100;", "");
    f = fopen(conf, "a");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "health: { stuck_timeout_s = 3; };\n");
    fclose(f);
    a = th_relay_start(&t, conf);
    th_wait_log(&t, "role=leader", 30000);
    backends(&t, "", leader, sizeof leader);
    b = th_relay_start(&t, conf);
    th_wait_log(&t, "role=standby", 30000);
    backends(&t, leader, standby, sizeof standby);
    signal_backends(standby, SIGSTOP);
    th_stop(b, 0, 30000, 1); /* signal 0: only wait */
    signal_backends(standby, SIGCONT);
    fires(&t, "relay.log", "loop_stuck", 1);

    signal_backends(leader, SIGSTOP);
    ck_assert_int_eq(th_write(&t, 2, 20, 10, 50, "order"), 20);
    th_wait_log(&t, "event=postgres_unresponsive", 30000);
    signal_backends(leader, SIGCONT);
    fires(&t, "relay.log", "postgres_unresponsive", 1);
    finish(&t, &m, a);
}
END_TEST

/* The stock consumer parks a message of an unknown type, then cannot
 * commit (its offsets table renamed away) while 1200 orders arrive. */
START_TEST(consumer_faults) {
    th_ctx_t t;
    th_mock_t m;
    pid_t relay, stock;
    PGconn *c;

    stock = shop_start(&t, &m, "alerts_consumer", &c, &relay);
    orders(c, 1, 1, "OrderShipped");
    wait_reach(&t, "stock.log", "event=message_parked", NULL, 1);
    fires(&t, "stock.log", "message_parked", 1);
    th_exec(c, "ALTER TABLE consumer_offsets RENAME TO consumer_offsets_away");
    orders(c, 2, 1200, "OrderPlaced");
    wait_reach(&t, "stock.log", "event=stats", "max_lag", 1000);
    wait_reach(&t, "stock.log", "event=batch_rolled_back", NULL, 3);
    fires(&t, "stock.log", "consumer_lagging", 1);
    fires(&t, "stock.log", "batch_rolled_back", 1);
    th_exec(c, "ALTER TABLE consumer_offsets_away RENAME TO consumer_offsets");
    th_wait_count(&t, "SELECT count(*) FROM shop_stock_moves", 1200, 60000);
    th_stop(stock, SIGTERM, 20000, 0);
    PQfinish(c);
    finish(&t, &m, relay);
}
END_TEST

TH_MAIN("alerts", 180, healthy_run_fires_no_alert, row_failures, broker_down, postgres_down, fatal_kafka_error,
        topic_not_authorized, health_events, consumer_faults, retention_warnings)
