/* The deployable artifacts, checked without servers:
 *  - `meson install --destdir` of this build gives exactly the documented
 *    layout, the generated systemd unit passes `systemd-analyze verify`, the
 *    installed config parses, and docs/consumer.md's build command compiles
 *    the example against the installed library and pkg-config file;
 *  - docs/consumer.md's loyalty.c is relay/examples/loyalty.c byte for byte;
 *  - the Containerfile's build stage works on a copy of exactly what it COPYs
 *    (its RUN deploy/build.sh line, run here), and what the runtime stage
 *    takes from it exists;
 *  - deploy/k8s-sidecar.yaml is valid YAML that mounts its ConfigMap where
 *    the relay reads it, and the embedded config passes --check's parsing.
 * The directories come from meson (OBX_INST_*). */
#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static char scratch[512];

/* snprintf that fails the test instead of cutting a command or path short. */
__attribute__((format(printf, 3, 4))) static void put(char *buf, size_t size, const char *fmt, ...) {
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    ck_assert_msg(n >= 0 && (size_t)n < size, "too long for its buffer: %s", fmt);
}

/* A fresh directory under the test scratch dir (or /tmp) for one case. */
static const char *workdir(const char *name) {
    char cmd[1200];
    const char *base = getenv("OBX_TEST_TMP");
    put(scratch, sizeof scratch, "%s/deploy-%s", base && *base ? base : "/tmp/obx-test-deploy", name);
    put(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", scratch, scratch);
    ck_assert_int_eq(th_run(cmd), 0);
    return scratch;
}

/* Runs cmd (stdout and stderr into log) and returns its exit status. */
static int run_logged(const char *cmd, const char *log) {
    char full[4200];
    put(full, sizeof full, "( %s\n) >'%s' 2>&1", cmd, log);
    return th_run(full);
}

static void assert_run(const char *cmd, const char *log) {
    ck_assert_msg(run_logged(cmd, log) == 0, "failed: %s (see %s)", cmd, log);
}

/* The whole file; NUL-terminated, length in *len. */
static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    buf = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

START_TEST(installed_tree_is_the_documented_layout) {
    const char *dir = workdir("install");
    char dest[600], cmd[4096], log[600], unit[700], conf[700], pc[800];
    size_t i;
    /* Every file meson installs, nothing more: a demo program or a test
     * binary that slips into the install fails here. */
    static const char *const files[] = {
        OBX_INST_BINDIR "/outbox-relay",
        OBX_INST_SYSCONFDIR "/outbox-relay/outbox-relay.conf",
        OBX_INST_DATADIR "/outbox-relay/schema/001_outbox.sql",
        OBX_INST_DATADIR "/outbox-relay/schema/002_inbox.sql",
        OBX_INST_DATADIR "/doc/outbox-relay/LICENSE",
        OBX_INST_DATADIR "/doc/outbox-relay/consumer.conf",
        OBX_INST_DATADIR "/doc/outbox-relay/outbox-relay.conf",
        OBX_INST_MANDIR "/man1/outbox-relay.1",
        OBX_INST_MANDIR "/man5/outbox-relay.conf.5",
        OBX_INST_MANDIR "/man5/obx-consumer.conf.5",
        OBX_INST_INCLUDEDIR "/outbox-relay/obx_dedup.h",
        OBX_INST_INCLUDEDIR "/outbox-relay/obx_runner.h",
        OBX_INST_LIBDIR "/libobxdedup.a",
        OBX_INST_LIBDIR "/pkgconfig/obx-dedup.pc",
        OBX_INST_UNITDIR "/outbox-relay.service",
#if OBX_INST_EXAMPLES
        OBX_INST_BINDIR "/obx-mock-kafka",
        OBX_INST_BINDIR "/obx-order-gen",
        OBX_INST_BINDIR "/obx-stock-consumer",
        OBX_INST_BINDIR "/obx-payment-consumer",
        OBX_INST_BINDIR "/obx-loyalty-consumer",
        OBX_INST_DATADIR "/outbox-relay/schema/003_shop.sql",
#endif
    };
    FILE *f;

    put(dest, sizeof dest, "%s/dest", dir);
    put(log, sizeof log, "%s/install.log", dir);
    put(cmd, sizeof cmd, "meson install -C '%s' --no-rebuild --quiet --destdir '%s'", th_bin(""), dest);
    assert_run(cmd, log);

    put(cmd, sizeof cmd, "%s/expected", dir);
    f = fopen(cmd, "w");
    ck_assert_ptr_nonnull(f);
    for (i = 0; i < sizeof files / sizeof files[0]; i++)
        fprintf(f, "%s\n", files[i]);
    fclose(f);
    put(log, sizeof log, "%s/layout.diff", dir);
    put(cmd, sizeof cmd,
             "cd '%s' && LC_ALL=C sort expected >expected.sorted && (cd dest && find . ! -type d | cut -c2- "
             "| LC_ALL=C sort) >installed && diff expected.sorted installed",
             dir);
    ck_assert_msg(run_logged(cmd, log) == 0, "installed files differ from the expected layout: %s", log);

    /* The unit starts the installed relay on the installed config. */
    put(unit, sizeof unit, "%s%s/outbox-relay.service", dest, OBX_INST_UNITDIR);
    put(conf, sizeof conf, "%s%s/outbox-relay/outbox-relay.conf", dest, OBX_INST_SYSCONFDIR);
    put(log, sizeof log, "%s/unit.log", dir);
    put(cmd, sizeof cmd,
             "grep -qxF 'ExecStart=%s/outbox-relay -c %s/outbox-relay/outbox-relay.conf' '%s' && ! grep -n '@[A-Z_]*@' '%s'",
             OBX_INST_BINDIR, OBX_INST_SYSCONFDIR, unit, unit);
    ck_assert_msg(run_logged(cmd, log) == 0, "%s: ExecStart or an unfilled @VAR@ (see %s)", unit, log);
    /* verify wants ExecStart's program to exist: the copy it checks runs
     * the staged one. (--root would need all of systemd under the destdir.) */
    put(log, sizeof log, "%s/systemd-analyze.log", dir);
    put(cmd, sizeof cmd,
        "! command -v systemd-analyze >/dev/null || { mkdir -p '%s/verify' && "
        "sed 's|^ExecStart=%s/|ExecStart=%s%s/|' '%s' >'%s/verify/outbox-relay.service' && "
        "systemd-analyze verify '%s/verify/outbox-relay.service' && ! grep -q . '%s'; }",
        dir, OBX_INST_BINDIR, dest, OBX_INST_BINDIR, unit, dir, dir, log);
    ck_assert_msg(run_logged(cmd, log) == 0, "systemd-analyze verify complains, see %s", log);

    /* The example config parses: --check gets past the config (exit 2 is a
     * config error) to the connection attempts. */
    put(log, sizeof log, "%s/check.log", dir);
    put(cmd, sizeof cmd, "timeout 60 '%s%s/outbox-relay' -c '%s' --check", dest, OBX_INST_BINDIR, conf);
    ck_assert_msg(run_logged(cmd, log) != 2, "the installed config does not parse, see %s", log);
    put(cmd, sizeof cmd, "grep -qF 'config: %s ok' '%s'", conf, log);
    ck_assert_msg(th_run(cmd) == 0, "no 'config: ... ok' line, see %s", log);

    /* Installing again keeps an edited config. */
    put(log, sizeof log, "%s/reinstall.log", dir);
    put(cmd, sizeof cmd, "echo '# edited' >>'%s' && meson install -C '%s' --no-rebuild --quiet --destdir '%s' && "
        "tail -1 '%s' | grep -qxF '# edited'", conf, th_bin(""), dest, conf);
    ck_assert_msg(run_logged(cmd, log) == 0, "a second meson install replaced the edited %s, see %s", conf, log);

    /* docs/consumer.md: cc -o loyalty loyalty.c $(pkg-config --cflags --libs obx-dedup),
     * with a copy of the .pc whose prefix is under the destdir. */
    put(log, sizeof log, "%s/pc.log", dir);
    put(cmd, sizeof cmd, "mkdir -p '%s/pc' && sed 's|^prefix=.*|prefix=%s%s|' '%s%s/pkgconfig/obx-dedup.pc' >'%s/pc/obx-dedup.pc'",
        dir, dest, OBX_INST_PREFIX, dest, OBX_INST_LIBDIR, dir);
    assert_run(cmd, log);
    put(pc, sizeof pc, "PKG_CONFIG_PATH='%s/pc' pkg-config --cflags --libs obx-dedup", dir);
    put(log, sizeof log, "%s/loyalty-cc.log", dir);
    put(cmd, sizeof cmd, "cc -std=c11 -Wall -Wextra -Werror %s -o '%s/loyalty' '%s' $(%s)", OBX_INST_CFLAGS, dir,
             th_src("relay/examples/loyalty.c"), pc);
    assert_run(cmd, log);
    put(log, sizeof log, "%s/loyalty-run.log", dir);
    put(cmd, sizeof cmd, "'%s/loyalty' --version | grep -q '^loyalty ' && '%s/loyalty' --help", dir, dir);
    assert_run(cmd, log);
    put(cmd, sizeof cmd, "'%s/loyalty' -c '%s/no-such.conf'", dir, dir);
    ck_assert_msg(run_logged(cmd, log) == 2, "loyalty with a missing config: not exit 2, see %s", log);
}
END_TEST

START_TEST(consumer_guide_example_is_relay_examples_loyalty_c) {
    static const char open[] = "```c\n/* loyalty.c:";
    size_t md_len, c_len, line = 1, i;
    char *md = slurp(th_src("docs/consumer.md"), &md_len);
    char *c = slurp(th_src("relay/examples/loyalty.c"), &c_len);
    char *start = strstr(md, open), *end;

    ck_assert_msg(start != NULL, "docs/consumer.md has no ```c block starting with /* loyalty.c:");
    start += strlen("```c\n");
    end = strstr(start, "\n```\n");
    ck_assert_msg(end != NULL, "docs/consumer.md: the loyalty.c block does not end");
    end++; /* the block's last newline belongs to the file */
    for (i = 0; i < c_len && start + i < end && start[i] == c[i]; i++)
        line += c[i] == '\n';
    ck_assert_msg(i == c_len && start + i == end,
                  "docs/consumer.md's loyalty.c and relay/examples/loyalty.c differ from line %zu", line);
    free(md);
    free(c);
}
END_TEST

START_TEST(containerfile_builds_from_what_it_copies) {
    const char *dir = workdir("container");
    char cmd[4096], log[600];

    /* Docker's COPY semantics: a directory's contents into DEST, a file into DEST/. */
    put(log, sizeof log, "%s/copy.log", dir);
    put(cmd, sizeof cmd,
             "cd '%s' && awk '/^FROM /{n++} n==1 && $1==\"COPY\" && $2 !~ /^--/ {for (i = 2; i < NF; i++) print $i, $NF}' "
             "deploy/Containerfile | while read -r s d; do mkdir -p '%s/src/'\"$d\" && "
             "if [ -d \"$s\" ]; then cp -a \"$s/.\" '%s/src/'\"$d/\"; else cp -a \"$s\" '%s/src/'\"$d/\"; fi || exit 1; done",
             th_src(""), dir, dir, dir);
    assert_run(cmd, log);

    /* The build stage's RUN deploy/build.sh BUILD STAGING OPTIONS..., with
     * both directories moved under this case's. */
    put(log, sizeof log, "%s/build.log", dir);
    put(cmd, sizeof cmd,
             "cd '%s/src' && opts=$(awk '/^FROM /{n++} n==1 && $1==\"RUN\" && $2==\"deploy/build.sh\" "
             "{for (i = 5; i <= NF; i++) printf \"%%s \", $i; found++} END {exit found != 1}' deploy/Containerfile) "
             "&& deploy/build.sh '%s/build' '%s/staging' $opts",
             dir, dir, dir);
    assert_run(cmd, log);

    /* Every COPY --from=build source of the runtime stage was staged, and the staged relay runs. */
    put(log, sizeof log, "%s/staged.log", dir);
    put(cmd, sizeof cmd,
             "cd '%s' && n=0 && for p in $(awk '/^FROM /{n++} n==2 && $1==\"COPY\" && $2==\"--from=build\" {print $3}' "
             "'%s'); do n=$((n + 1)); test -e \".$p\" || { echo \"missing $p\"; exit 1; }; done && test $n -gt 0 "
             "&& staging/usr/local/bin/outbox-relay --version",
             dir, th_src("deploy/Containerfile"));
    assert_run(cmd, log);
}
END_TEST

START_TEST(k8s_yaml_is_valid_and_its_config_parses) {
    const char *dir = workdir("k8s");
    const char *yaml = th_src("deploy/k8s-sidecar.yaml");
    char cmd[4096], log[600], conf[600];

    /* The relay container reads -c PATH from the directory its ConfigMap is
     * mounted on, and the ConfigMap has a key of PATH's name. Skipped without
     * python3's yaml module. */
    put(log, sizeof log, "%s/yaml.log", dir);
    put(cmd, sizeof cmd,
             "! python3 -c 'import yaml' 2>/dev/null || python3 - '%s' <<'EOF'\n"
             "import os, sys, yaml\n"
             "docs = {d['kind']: d for d in yaml.safe_load_all(open(sys.argv[1])) if d}\n"
             "pod = docs['Deployment']['spec']['template']['spec']\n"
             "relay = next(c for c in pod['containers'] if c['name'] == 'outbox-relay')\n"
             "path = relay['args'][relay['args'].index('-c') + 1]\n"
             "mount = next(m for m in relay['volumeMounts'] if m['mountPath'] == os.path.dirname(path))\n"
             "vol = next(v for v in pod['volumes'] if v['name'] == mount['name'])\n"
             "cm = docs['ConfigMap']\n"
             "assert vol['configMap']['name'] == cm['metadata']['name'], 'the volume is not the ConfigMap'\n"
             "assert os.path.basename(path) in cm['data'], 'the ConfigMap has no ' + os.path.basename(path)\n"
             "assert docs['Secret']['metadata']['name'] in str(relay['env']), 'PGPASSWORD not from the Secret'\n"
             "EOF",
             yaml);
    ck_assert_msg(run_logged(cmd, log) == 0, "%s: see %s", yaml, log);

    /* The ConfigMap's outbox-relay.conf block (indented by four), through --check. */
    put(conf, sizeof conf, "%s/outbox-relay.conf", dir);
    put(cmd, sizeof cmd,
             "awk '/^  outbox-relay.conf: [|]$/ {f = 1; next} f && /^    / {print substr($0, 5); next} "
             "f && /^$/ {print; next} {f = 0}' '%s' >'%s' && grep -q bootstrap_servers '%s'",
             yaml, conf, conf);
    ck_assert_msg(th_run(cmd) == 0, "no outbox-relay.conf block in %s", yaml);
    put(log, sizeof log, "%s/check.log", dir);
    put(cmd, sizeof cmd, "timeout 60 '%s' -c '%s' --check", th_bin("outbox-relay"), conf);
    ck_assert_msg(run_logged(cmd, log) != 2, "the k8s ConfigMap's config does not parse, see %s", log);
    put(cmd, sizeof cmd, "grep -qF 'config: %s ok' '%s'", conf, log);
    ck_assert_msg(th_run(cmd) == 0, "no 'config: ... ok' line, see %s", log);
}
END_TEST

TH_MAIN("deploy", 600, installed_tree_is_the_documented_layout, consumer_guide_example_is_relay_examples_loyalty_c,
        containerfile_builds_from_what_it_copies, k8s_yaml_is_valid_and_its_config_parses)
