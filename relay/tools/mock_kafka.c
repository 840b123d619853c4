/* obx-mock-kafka: a development Kafka cluster built on librdkafka's mock
 * cluster. Prints its bootstrap servers as the first line of stdout and
 * serves on 127.0.0.1 until SIGTERM/SIGINT. */
#include <getopt.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "signals.h"

static volatile sig_atomic_t run = 1;

static void on_signal(int sig) {
    (void)sig;
    run = 0;
}

static void usage(FILE *f) {
    fprintf(f, "Usage: obx-mock-kafka [--brokers N] [--topic NAME:PARTITIONS]...\n"
               "A development Kafka cluster (librdkafka's mock cluster) on 127.0.0.1.\n"
               "Prints the bootstrap servers on the first line of stdout; stops on SIGTERM.\n"
               "Topics not created here are auto-created with 4 partitions.\n");
}

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"brokers", required_argument, NULL, 'b'},
        {"topic", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int brokers = 1, opt, rc = 1;
    char err[512];
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mc;
    sigset_t block, old;

    obx_log_set_component("mock-kafka");
    while ((opt = getopt_long(argc, argv, "b:t:hV", opts, NULL)) != -1) {
        if (opt == 'b') {
            brokers = atoi(optarg);
            if (brokers < 1 || brokers > 16) {
                fprintf(stderr, "obx-mock-kafka: --brokers must be 1..16\n");
                return 2;
            }
        } else if (opt == 'h') {
            usage(stdout);
            return 0;
        } else if (opt == 'V') {
            printf("obx-mock-kafka %s (librdkafka %s)\n", OBX_VERSION, rd_kafka_version_str());
            return 0;
        } else if (opt != 't') {
            usage(stderr);
            return 2;
        }
    }
    conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "obx-mock-kafka: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        fprintf(stderr, "obx-mock-kafka: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (!mc) {
        fprintf(stderr, "obx-mock-kafka: cannot create the mock cluster\n");
        goto out;
    }
    optind = 1;
    while ((opt = getopt_long(argc, argv, "b:t:hV", opts, NULL)) != -1) {
        char *colon;
        int parts;
        if (opt != 't')
            continue;
        colon = strrchr(optarg, ':');
        parts = colon ? atoi(colon + 1) : 0;
        if (!colon || parts < 1) {
            fprintf(stderr, "obx-mock-kafka: --topic %s: expected NAME:PARTITIONS\n", optarg);
            goto out_mc;
        }
        *colon = '\0';
        if (rd_kafka_mock_topic_create(mc, optarg, parts, brokers < 3 ? brokers : 3)) {
            fprintf(stderr, "obx-mock-kafka: cannot create topic %s\n", optarg);
            goto out_mc;
        }
    }
    obx_signals_install(on_signal);
    printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);
    OBX_LOG(OBX_LOG_INFO, "mock_kafka_serving",
            "mock kafka serving", KS("bootstrap", rd_kafka_mock_cluster_bootstraps(mc)),
            KI("brokers", brokers));
    /* Block the signals, then wait for them atomically: no lost wake-up. */
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &old);
    while (run)
        sigsuspend(&old);
    OBX_LOG(OBX_LOG_INFO, "mock_kafka_stopping", "mock kafka stopping");
    rc = 0;
out_mc:
    rd_kafka_mock_cluster_destroy(mc);
out:
    rd_kafka_destroy(rk);
    return rc;
}
