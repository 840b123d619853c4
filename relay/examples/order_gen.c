/* obx-order-gen: writes shop orders (schema/003_shop.sql) and their
 * OrderPlaced events into PostgreSQL, the order row and its outbox row in one
 * transaction, for the quickstart, demos and tests.
 *
 * Order i (0-based) goes to client i % clients and, with --rate, is due at
 * start + i/rate. An order counts as written only once its commit is
 * confirmed; a failed try is retried on a new connection, so a PostgreSQL
 * restart loses nothing reported as written. Prints one logfmt summary line
 * on stdout; exits 0 only if every order was written. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backoff.h"
#include "log.h"
#include "pgconn.h"

#define MAX_TRIES 20
#define ID_BATCH 256
#define NS_PER_S INT64_C(1000000000)
#define EXIT_USAGE 2

/* One statement, so one round trip and one implicit transaction for the order
 * and its event. The id is reserved before the first try and reused by every
 * retry: when an earlier try committed but its outcome was lost, the retry
 * inserts nothing and returns no row instead of writing the order twice. */
static const char order_sql[] =
    "WITH o AS ("
    " INSERT INTO shop_orders (order_id, sku, qty, amount_cents) VALUES ($1, $2, $3, $4)"
    " ON CONFLICT (order_id) DO NOTHING"
    " RETURNING order_id, sku, qty, amount_cents)"
    " SELECT outbox_enqueue('order', o.order_id::text, 'OrderPlaced',"
    " jsonb_build_object('order_id', o.order_id, 'sku', o.sku, 'qty', o.qty,"
    " 'amount_cents', o.amount_cents))"
    " FROM o";

/* Ids in batches: one nextval round trip per order would nearly halve the rate. */
static const char reserve_sql[] =
    "SELECT nextval('shop_order_id_seq') FROM generate_series(1, $1::int)";

static const char stock_sql[] =
    "INSERT INTO shop_stock (sku, available, initial)"
    " SELECT 'sku-' || g, $2::int, $2::int FROM generate_series(1, $1::int) g"
    " ON CONFLICT (sku) DO UPDATE SET available = EXCLUDED.available, initial = EXCLUDED.initial";

typedef struct {
    const char *conninfo;
    int64_t orders, skus, stock, qty_max, price_cents, clients, rate, seed, hot_skus;
} gen_opts_t;

typedef struct {
    gen_opts_t opts;
    int64_t start_ns;  /* CLOCK_MONOTONIC; order i is due at start_ns + i/rate */
    atomic_int stop;   /* set by a client that gave up: the others would fail alike */
} gen_run_t;

typedef struct {
    gen_run_t *run;
    int64_t index;     /* client number, also its first order index */
    PGconn *conn;      /* NULL until connected; dropped after any failed try */
    obx_backoff_t backoff;
    int64_t ids[ID_BATCH];
    int ids_next, ids_n;
    int64_t written;
    pthread_t thread;
} gen_client_t;

typedef struct {
    int64_t index, id, sku, qty, amount_cents;
    int has_id;
    int sent;          /* the insert was sent at least once with this id */
} gen_order_t;

typedef enum { TRY_OK, TRY_RETRY, TRY_FATAL } gen_try_t;

static void usage(FILE *f) {
    fprintf(f,
        "Usage: obx-order-gen -d CONNINFO [options]\n"
        "\n"
        "Writes shop orders and their OrderPlaced outbox events, one transaction per\n"
        "order. Needs schema/001_outbox.sql and schema/003_shop.sql applied.\n"
        "\n"
        "  -d, --dbname CONNINFO   libpq connection string or database name (required)\n"
        "  -n, --orders N          orders to write (default 1000)\n"
        "      --skus K            skus sku-1..sku-K (default 50)\n"
        "      --stock Q           first set shop_stock to K rows, available = initial = Q\n"
        "      --qty-max M         quantity uniform in 1..M (default 3)\n"
        "      --price-cents P     amount_cents = qty * P (default 1999)\n"
        "      --clients C         concurrent connections (default 4)\n"
        "      --rate R            orders/s over all clients, 0 = as fast as possible (default 0)\n"
        "      --seed S            sku and qty of each order derive from S and its index (default 1)\n"
        "      --hot-skus H        flash sale: 80%% of orders go to sku-1..sku-H\n"
        "  -h, --help              this help\n"
        "  -V, --version           print the version\n"
        "\n"
        "A failed try is retried on a new connection (up to %d tries per order).\n"
        "Prints: orders=N written=N failed=N elapsed_ms=N rate_per_s=N\n"
        "(failed = orders not written). Exit codes: 0 all written, 1 otherwise, 2 usage.\n",
        MAX_TRIES);
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static void sleep_until_ns(int64_t deadline) {
    struct timespec ts = {.tv_sec = deadline / NS_PER_S, .tv_nsec = deadline % NS_PER_S};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        continue;
}

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* sku and qty depend only on the seed and the order index, so a run is
 * reproducible whatever the number of clients, their timing or retries. */
static void order_make(const gen_opts_t *o, int64_t index, gen_order_t *ord) {
    uint64_t st = (uint64_t)o->seed ^ ((uint64_t)index * 0xd1342543de82ef95ULL);
    uint64_t pick = splitmix64(&st) % 100, r = splitmix64(&st);

    memset(ord, 0, sizeof *ord);
    ord->index = index;
    if (o->hot_skus > 0 && o->hot_skus < o->skus)
        ord->sku = pick < 80 ? 1 + (int64_t)(r % (uint64_t)o->hot_skus)
                             : o->hot_skus + 1 + (int64_t)(r % (uint64_t)(o->skus - o->hot_skus));
    else
        ord->sku = 1 + (int64_t)(r % (uint64_t)o->skus);
    ord->qty = 1 + (int64_t)(splitmix64(&st) % (uint64_t)o->qty_max);
    ord->amount_cents = ord->qty * o->price_cents;
}

/* libpq messages span lines ("...\n\tIs the server running...") and end
 * with a newline; a log value reads better as one line. */
static void msg_one_line(char *dst, size_t size, const char *msg) {
    size_t n = 0;

    for (; *msg && n + 1 < size; msg++) {
        int space = *msg == '\n' || *msg == '\t' || *msg == ' ';
        if (!space)
            dst[n++] = *msg;
        else if (n > 0 && dst[n - 1] != ' ')
            dst[n++] = ' ';
    }
    while (n > 0 && dst[n - 1] == ' ')
        n--;
    dst[n] = '\0';
}

/* A server error's primary message alone: the full one adds the statement
 * text and a caret line. libpq's own errors (connection lost) have none. */
static void err_set(char *err, size_t size, PGconn *conn, const PGresult *res) {
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;

    if (!msg)
        msg = res && *PQresultErrorMessage(res) ? PQresultErrorMessage(res) : PQerrorMessage(conn);
    msg_one_line(err, size, msg);
}

/* Failures a new connection can cure: the connection or the server went
 * away, the server is starting or stopping, or it briefly lacked resources.
 * Anything else (a missing table, an id already taken) fails on every try. */
static gen_try_t classify(PGconn *conn, const PGresult *res) {
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    if (PQstatus(conn) == CONNECTION_BAD || !state)
        return TRY_RETRY;
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "53", 2) == 0 ||
        strcmp(state, "57P01") == 0 || strcmp(state, "57P02") == 0 || strcmp(state, "57P03") == 0 ||
        strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)
        return TRY_RETRY;
    return TRY_FATAL;
}

static gen_try_t client_connect(gen_client_t *c, char *err, size_t errsize) {
    PGresult *res = NULL;
    gen_try_t t = TRY_RETRY;

    c->conn = obx_pgconn_open(c->run->opts.conninfo, "obx-order-gen");
    if (PQstatus(c->conn) != CONNECTION_OK) {
        err_set(err, errsize, c->conn, NULL);
        goto out;
    }
    res = PQprepare(c->conn, "order", order_sql, 4, NULL);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        err_set(err, errsize, c->conn, res);
        t = classify(c->conn, res);
        goto out;
    }
    t = TRY_OK;
out:
    PQclear(res);
    return t;
}

/* Reserves ids for at most the orders this client has left, from ord on. */
static gen_try_t client_reserve_ids(gen_client_t *c, const gen_order_t *ord, char *err,
                                    size_t errsize) {
    const gen_opts_t *o = &c->run->opts;
    int64_t left = (o->orders - 1 - ord->index) / o->clients + 1;
    char n[24];
    const char *params[1] = {n};
    PGresult *res;
    gen_try_t t = TRY_OK;

    snprintf(n, sizeof n, "%" PRId64, left < ID_BATCH ? left : ID_BATCH);
    res = PQexecParams(c->conn, reserve_sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        err_set(err, errsize, c->conn, res);
        t = classify(c->conn, res);
        goto out;
    }
    c->ids_n = PQntuples(res);
    c->ids_next = 0;
    for (int r = 0; r < c->ids_n; r++)
        c->ids[r] = strtoll(PQgetvalue(res, r, 0), NULL, 10);
out:
    PQclear(res);
    return t;
}

static gen_try_t client_insert(gen_client_t *c, gen_order_t *ord, char *err, size_t errsize) {
    char id[24], sku[32], qty[24], amount[24];
    const char *params[4] = {id, sku, qty, amount};
    int sent_before = ord->sent;
    PGresult *res;
    gen_try_t t = TRY_OK;

    snprintf(id, sizeof id, "%" PRId64, ord->id);
    snprintf(sku, sizeof sku, "sku-%" PRId64, ord->sku);
    snprintf(qty, sizeof qty, "%" PRId64, ord->qty);
    snprintf(amount, sizeof amount, "%" PRId64, ord->amount_cents);
    ord->sent = 1;
    res = PQexecPrepared(c->conn, "order", 4, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        err_set(err, errsize, c->conn, res);
        t = classify(c->conn, res);
    } else if (PQtransactionStatus(c->conn) != PQTRANS_IDLE) {
        /* The commit happens at Sync, after the rows were sent, and libpq can
         * hand back the rows of a connection that broke in between: only a
         * ReadyForQuery saying "idle" proves the commit. */
        snprintf(err, errsize, "connection lost before the commit was confirmed");
        t = TRY_RETRY;
    } else if (PQntuples(res) == 0 && sent_before) {
        OBX_LOG(OBX_LOG_INFO, "order_found_committed", "order found committed by an earlier try",
                KI("client", c->index), KI("order_id", ord->id));
    } else if (PQntuples(res) == 0) {
        snprintf(err, errsize, "order_id %" PRId64 " already exists in shop_orders", ord->id);
        t = TRY_FATAL;
    }
    PQclear(res);
    return t;
}

/* One try: connect if needed, give the order an id if it has none, write it. */
static gen_try_t client_try(gen_client_t *c, gen_order_t *ord, char *err, size_t errsize) {
    gen_try_t t;

    if (!c->conn && (t = client_connect(c, err, errsize)) != TRY_OK)
        return t;
    if (!ord->has_id) {
        if (c->ids_next == c->ids_n && (t = client_reserve_ids(c, ord, err, errsize)) != TRY_OK)
            return t;
        ord->id = c->ids[c->ids_next++];
        ord->has_id = 1;
    }
    return client_insert(c, ord, err, errsize);
}

/* Returns 0 once the order's commit is confirmed, -1 if it was given up. */
static int client_write_order(gen_client_t *c, gen_order_t *ord) {
    char err[1024] = "";
    int attempt;

    for (attempt = 1; attempt <= MAX_TRIES; attempt++) {
        gen_try_t t;

        if (attempt > 1) {
            int64_t ms = obx_backoff_next(&c->backoff);
            sleep_until_ns(now_ns() + ms * 1000000);
        }
        t = client_try(c, ord, err, sizeof err);
        if (t == TRY_OK) {
            if (attempt > 1)
                OBX_LOG(OBX_LOG_INFO, "order_written_after_retries",
                        "order written after retries", KI("client", c->index),
                        KI("order_id", ord->id), KI("tries", attempt));
            obx_backoff_reset(&c->backoff);
            return 0;
        }
        PQfinish(c->conn);
        c->conn = NULL;
        if (t == TRY_FATAL)
            break;
        if (attempt < MAX_TRIES)
            OBX_LOG(OBX_LOG_WARN, "order_try_failed", "order try failed; retrying on a new connection",
                    KI("client", c->index), KI("order_index", ord->index), KI("try", attempt),
                    KS("error", err));
    }
    OBX_LOG(OBX_LOG_ERROR, "order_not_written", "order not written; stopping", KI("client", c->index),
            KI("order_index", ord->index), KI("tries", attempt > MAX_TRIES ? MAX_TRIES : attempt),
            KS("error", err));
    return -1;
}

static void *client_run(void *arg) {
    gen_client_t *c = arg;
    const gen_opts_t *o = &c->run->opts;

    for (int64_t i = c->index; i < o->orders && !atomic_load(&c->run->stop); i += o->clients) {
        gen_order_t ord;

        order_make(o, i, &ord);
        /* Absolute deadlines: time spent writing or retrying does not push the
         * schedule back, and a client that fell behind catches up. */
        if (o->rate > 0)
            sleep_until_ns(c->run->start_ns + i * NS_PER_S / o->rate);
        if (client_write_order(c, &ord) != 0) {
            atomic_store(&c->run->stop, 1);
            break;
        }
        c->written++;
    }
    PQfinish(c->conn);
    c->conn = NULL;
    return NULL;
}

/* The options that take an integer: name, bounds and where it goes. Any
 * other option getopt returns (a '?' for an unknown one) is a usage error. */
enum { OPT_SKUS = 256, OPT_STOCK, OPT_QTY_MAX, OPT_PRICE, OPT_CLIENTS, OPT_RATE, OPT_SEED, OPT_HOT };

static const struct {
    int opt;
    const char *name;
    int64_t min, max;
    size_t offset;
} int_opts[] = {
    {'n', "orders", 0, 1000000000, offsetof(gen_opts_t, orders)},
    {OPT_SKUS, "skus", 1, 10000000, offsetof(gen_opts_t, skus)},
    {OPT_STOCK, "stock", 0, INT32_MAX, offsetof(gen_opts_t, stock)},
    {OPT_QTY_MAX, "qty-max", 1, 1000000, offsetof(gen_opts_t, qty_max)},
    {OPT_PRICE, "price-cents", 0, 1000000000000, offsetof(gen_opts_t, price_cents)},
    {OPT_CLIENTS, "clients", 1, 1000, offsetof(gen_opts_t, clients)},
    {OPT_RATE, "rate", 0, 1000000000, offsetof(gen_opts_t, rate)},
    {OPT_SEED, "seed", 0, INT64_MAX, offsetof(gen_opts_t, seed)},
    {OPT_HOT, "hot-skus", 1, 10000000, offsetof(gen_opts_t, hot_skus)},
};

static int parse_int_opt(int opt, const char *arg, gen_opts_t *o) {
    for (size_t k = 0; k < sizeof int_opts / sizeof int_opts[0]; k++) {
        char *end;
        long long v;

        if (int_opts[k].opt != opt)
            continue;
        errno = 0;
        v = strtoll(arg, &end, 10);
        if (errno || end == arg || *end || v < int_opts[k].min || v > int_opts[k].max) {
            fprintf(stderr, "obx-order-gen: --%s must be an integer in %" PRId64 "..%" PRId64 "\n",
                    int_opts[k].name, int_opts[k].min, int_opts[k].max);
            return -1;
        }
        *(int64_t *)((char *)o + int_opts[k].offset) = v;
        return 0;
    }
    usage(stderr);
    return -1;
}

/* Returns -1 to run, or the exit code. */
static int parse_args(int argc, char **argv, gen_opts_t *o) {
    static const struct option opts[] = {
        {"dbname", required_argument, NULL, 'd'},
        {"orders", required_argument, NULL, 'n'},
        {"skus", required_argument, NULL, OPT_SKUS},
        {"stock", required_argument, NULL, OPT_STOCK},
        {"qty-max", required_argument, NULL, OPT_QTY_MAX},
        {"price-cents", required_argument, NULL, OPT_PRICE},
        {"clients", required_argument, NULL, OPT_CLIENTS},
        {"rate", required_argument, NULL, OPT_RATE},
        {"seed", required_argument, NULL, OPT_SEED},
        {"hot-skus", required_argument, NULL, OPT_HOT},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int opt;

    while ((opt = getopt_long(argc, argv, "d:n:hV", opts, NULL)) != -1) {
        if (opt == 'd') {
            o->conninfo = optarg;
        } else if (opt == 'h') {
            usage(stdout);
            return 0;
        } else if (opt == 'V') {
            printf("obx-order-gen %s\n", OBX_VERSION);
            return 0;
        } else if (parse_int_opt(opt, optarg, o) != 0) {
            return EXIT_USAGE;
        }
    }
    if (!o->conninfo || optind < argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (o->hot_skus > o->skus) {
        fprintf(stderr, "obx-order-gen: --hot-skus must not exceed --skus\n");
        return EXIT_USAGE;
    }
    return -1;
}

static int stock_init(PGconn *conn, const gen_opts_t *o) {
    char k[24], q[24];
    const char *params[2] = {k, q};
    PGresult *res;
    int rc = 0;

    snprintf(k, sizeof k, "%" PRId64, o->skus);
    snprintf(q, sizeof q, "%" PRId64, o->stock);
    res = PQexecParams(conn, stock_sql, 2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        char err[1024];
        err_set(err, sizeof err, conn, res);
        OBX_LOG(OBX_LOG_ERROR, "stock_init_failed", "cannot initialise shop_stock", KS("error", err));
        rc = -1;
    } else {
        OBX_LOG(OBX_LOG_INFO, "stock_initialised",
                "shop_stock initialised", KI("skus", o->skus), KI("available", o->stock));
    }
    PQclear(res);
    return rc;
}

int main(int argc, char **argv) {
    gen_run_t run = {
        .opts = {.orders = 1000, .skus = 50, .stock = -1, .qty_max = 3, .price_cents = 1999,
                 .clients = 4, .rate = 0, .seed = 1, .hot_skus = 0},
    };
    gen_client_t *clients = NULL;
    PGconn *conn;
    int64_t started = 0, written = 0, elapsed_ms = 0;
    int rc;
    char err[1024];

    obx_log_set_component("order-gen");
    if ((rc = parse_args(argc, argv, &run.opts)) >= 0)
        return rc;
    rc = 1;
    /* Connecting once up front makes a wrong CONNINFO fail at once instead of
     * after every client's retries. */
    conn = obx_pgconn_open(run.opts.conninfo, "obx-order-gen");
    if (PQstatus(conn) != CONNECTION_OK) {
        err_set(err, sizeof err, conn, NULL);
        OBX_LOG(OBX_LOG_ERROR, "postgres_connect_failed", "cannot connect to PostgreSQL", KS("error", err));
        goto out;
    }
    if (run.opts.stock >= 0 && stock_init(conn, &run.opts) != 0)
        goto out;
    PQfinish(conn);
    conn = NULL;
    clients = calloc((size_t)run.opts.clients, sizeof *clients);
    if (!clients) {
        OBX_LOG(OBX_LOG_ERROR, "out_of_memory", "out of memory");
        goto out;
    }
    OBX_LOG(OBX_LOG_INFO, "orders_writing", "writing orders", KI("orders", run.opts.orders),
            KI("clients", run.opts.clients), KI("rate", run.opts.rate), KI("skus", run.opts.skus),
            KI("hot_skus", run.opts.hot_skus), KI("seed", run.opts.seed));
    run.start_ns = now_ns();
    for (; started < run.opts.clients; started++) {
        gen_client_t *c = &clients[started];
        int err_no;

        c->run = &run;
        c->index = started;
        obx_backoff_init(&c->backoff, 50, 1000, (uint64_t)run.opts.seed + (uint64_t)started + 1);
        err_no = pthread_create(&c->thread, NULL, client_run, c);
        if (err_no != 0) {
            OBX_LOG(OBX_LOG_ERROR, "thread_start_failed",
                    "cannot start a client thread", KS("error", strerror(err_no)));
            atomic_store(&run.stop, 1);
            break;
        }
    }
    for (int64_t k = 0; k < started; k++) {
        pthread_join(clients[k].thread, NULL);
        written += clients[k].written;
    }
    elapsed_ms = (now_ns() - run.start_ns) / 1000000;
    OBX_LOG(OBX_LOG_INFO, "orders_done", "done", KI("written", written), KI("elapsed_ms", elapsed_ms));
    rc = written == run.opts.orders ? 0 : 1;
out:
    printf("orders=%" PRId64 " written=%" PRId64 " failed=%" PRId64 " elapsed_ms=%" PRId64
           " rate_per_s=%" PRId64 "\n",
           run.opts.orders, written, run.opts.orders - written, elapsed_ms,
           elapsed_ms > 0 ? written * 1000 / elapsed_ms : written);
    free(clients);
    PQfinish(conn);
    return rc;
}
