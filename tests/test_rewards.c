/* tests/test_rewards.c: GRPO's reward functions (objectives/rewards.h) on
 * hand-made completions, each value worked out by hand from the
 * definitions (TRL's think_format regex, DAPO's soft overlong penalty), and
 * the command reward with scripts that answer, crash, hang, answer short and
 * answer text (each one line naming the command and the record). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../objectives/rewards.h"
#include "../util/error.h"

static double score_one(const char *spec, const char *completion, const char *record, size_t n_ids) {
    zen_rewards *r = NULL;
    assert_int_equal(zen_rewards_create(&r, spec, "", 16, "test"), 0);
    int32_t ids[64] = {0};
    zen_reward_item it = {"prompt", completion, ids, n_ids, record, record ? strlen(record) : 0, 0, 0};
    double per[16], total;
    assert_int_equal(zen_rewards_score(r, &it, 1, per, &total, NULL), 0);
    zen_rewards_free(r);
    return per[0];
}

static void test_answer(void **state) {
    (void)state;
    const char *a = "[{\"name\": \"answer\"}]";
    /* the last number, against a string and a number field */
    assert_true(score_one(a, "I think 12, no: 41", "{\"answer\": \"41\"}", 3) == 1.0);
    assert_true(score_one(a, "I think 41, no: 12", "{\"answer\": 41}", 3) == 0.0);
    assert_true(score_one(a, "so -3.50", "{\"answer\": -3.5}", 3) == 1.0);
    assert_true(score_one(a, "total 1,234 apples", "{\"answer\": 1234}", 3) == 1.0);
    /* \boxed{} wins over later numbers, and is compared as a string when it is not a number */
    assert_true(score_one(a, "\\boxed{7} (checked 8)", "{\"answer\": 7}", 3) == 1.0);
    assert_true(score_one(a, "\\boxed{\\frac{1}{2}}", "{\"answer\": \"\\\\frac{1}{2}\"}", 3) == 1.0);
    /* no answer in the completion: 0; no gold answer in the record: null */
    assert_true(score_one(a, "no idea", "{\"answer\": 3}", 3) == 0.0);
    assert_true(isnan(score_one(a, "42", "{\"solution\": 42}", 3)));
    /* a regex and another field */
    const char *b = "[{\"name\": \"answer\", \"field\": \"sol\", \"regex\": \"#### (\\\\w+)\"}]";
    assert_true(score_one(b, "work #### nine and #### ten", "{\"sol\": \"ten\"}", 3) == 1.0);
}

static void test_regex_think_overlong(void **state) {
    (void)state;
    assert_true(score_one("[{\"name\": \"regex\", \"pattern\": \"^Answer:\"}]", "Answer: 3", NULL, 1) == 1.0);
    assert_true(score_one("[{\"name\": \"regex\", \"pattern\": \"^Answer:\"}]", "So, Answer: 3", NULL, 1) == 0.0);
    const char *t = "[{\"name\": \"think_format\"}]";
    assert_true(score_one(t, "<think>\nsteps\n</think>\nThe answer is 4", NULL, 1) == 1.0);
    assert_true(score_one(t, "<think>a</think>b<think>c</think>", NULL, 1) == 0.0); /* a second <think> */
    assert_true(score_one(t, "The answer <think>x</think>", NULL, 1) == 0.0);      /* not at the start */
    assert_true(score_one(t, "<think>never closed", NULL, 1) == 0.0);
    /* DAPO: L = 16 (grpo.max_completion_length here), c = 4: 0 up to 12 tokens, (12 - n) / 4 to 16, -1 beyond */
    const char *o = "[{\"name\": \"overlong\", \"buffer\": 4}]";
    assert_true(score_one(o, "x", NULL, 12) == 0.0);
    assert_true(score_one(o, "x", NULL, 14) == -0.5);
    assert_true(score_one(o, "x", NULL, 16) == -1.0);
    assert_true(score_one(o, "x", NULL, 17) == -1.0);
}

/* the weighted nansum over functions, NaN only when every one is null */
static void test_weights_and_nulls(void **state) {
    (void)state;
    zen_rewards *r = NULL;
    const char *spec = "[{\"name\": \"answer\"}, {\"name\": \"regex\", \"pattern\": \"!\"}]";
    assert_int_equal(zen_rewards_create(&r, spec, "[2.0, 0.5]", 16, "test"), 0);
    assert_int_equal(zen_rewards_count(r), 2);
    int32_t ids[1] = {0};
    zen_reward_item it[3] = {{"p", "7!", ids, 1, "{\"answer\": 7}", 13, 0, 0},
                             {"p", "7", ids, 1, "{}", 2, 0, 1},
                             {"p", "8!", ids, 1, "{\"answer\": 7}", 13, 0, 2}};
    double per[6], total[3];
    assert_int_equal(zen_rewards_score(r, it, 3, per, total, NULL), 0);
    assert_true(total[0] == 2.0 * 1 + 0.5 * 1);
    assert_true(isnan(per[2]) && total[1] == 0.0); /* the answer null: the regex's 0 alone */
    assert_true(total[2] == 0.5);
    zen_rewards_free(r);
    assert_int_not_equal(zen_rewards_create(&r, spec, "[1.0]", 16, "test"), 0); /* one weight per reward */
    assert_int_not_equal(zen_rewards_create(&r, "[{\"name\": \"nope\"}]", "", 16, "test"), 0);
}

/* a script in $TMPDIR, run as python3 SCRIPT */
static char script_path[256];
static const char *script(const char *body) {
    snprintf(script_path, sizeof script_path, "%s/zen_reward_test_%d.py", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
             (int)getpid());
    FILE *f = fopen(script_path, "w");
    assert_non_null(f);
    fputs(body, f);
    fclose(f);
    return script_path;
}

static int command_score(const char *body, const char *outputs, double *per, int *external) {
    char spec[1024];
    snprintf(spec, sizeof spec, "[{\"name\": \"command\", \"argv\": [\"python3\", \"%s\"], \"timeout_s\": 2%s}]",
             script(body), outputs);
    zen_rewards *r = NULL;
    assert_int_equal(zen_rewards_create(&r, spec, "", 16, "test"), 0);
    int32_t ids[2] = {5, 6};
    zen_reward_item it[2] = {{"2+2=", "4", ids, 2, "{\"answer\": 4}", 13, 7, 0},
                             {"2+2=", "5", ids, 2, "{\"answer\": 4}", 13, 7, 1}};
    double total[2];
    int rc = zen_rewards_score(r, it, 2, per, total, external);
    zen_rewards_free(r);
    return rc;
}

static void test_command(void **state) {
    (void)state;
    double per[4];
    int external;
    /* one JSON line in per completion (prompt, completion, ids, the record, group, sample), one number back */
    const char *good_null = "import json, sys\n"
                            "for line in sys.stdin:\n"
                            "    d = json.loads(line)\n"
                            "    print('null' if d['sample'] == 1 else (1.0 if d['completion'] == '4' else 0.0), flush=True)\n";
    assert_int_equal(command_score(good_null, "", per, &external), 0);
    assert_true(per[0] == 1.0 && isnan(per[1]));
    /* named outputs */
    const char *named = "import sys\nfor line in sys.stdin:\n    print('{\"ok\": 1, \"style\": null}', flush=True)\n";
    assert_int_equal(command_score(named, ", \"outputs\": [\"ok\", \"style\"]", per, &external), 0);
    assert_true(per[0] == 1.0 && isnan(per[1]) && per[2] == 1.0 && isnan(per[3]));
    /* failures: one line naming the command and the record, and marked external */
    struct { const char *name, *body, *fragment; } bad[] = {
        {"crash", "import sys\nsys.stderr.write('boom\\n')\nsys.exit(3)\n", "ended (exit status 3)"},
        {"hang", "import time\ntime.sleep(30)\n", "within 2 s"},
        {"short", "import sys\nsys.stdin.readline()\nprint(1.0, flush=True)\n", "ended"},
        {"text", "import sys\nfor line in sys.stdin:\n    print('good job', flush=True)\n", "'good job'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = command_score(bad[i].body, "", per, &external);
        const char *msg = zen_last_error();
        printf("command that %s: %s\n", bad[i].name, msg);
        assert_int_not_equal(rc, 0);
        assert_true(external);
        assert_non_null(strstr(msg, "reward command 'python3"));
        assert_non_null(strstr(msg, "record 7"));
        assert_non_null(strstr(msg, bad[i].fragment));
        assert_null(strchr(msg, '\n'));
    }
    unlink(script_path);
}

/* a batch whose lines and answers both overflow a pipe (64 KiB) with a command that answers as it reads: zen
 * writes while it reads, so neither side waits on the other; every answer lands on its own completion */
static void test_command_large_batch(void **state) {
    (void)state;
    enum { N = 20000 };
    const char *echo_len = "import json, sys\n"
                           "for line in sys.stdin:\n"
                           "    d = json.loads(line)\n"
                           "    print('%.15f' % (len(d['completion']) + d['sample'] / 1e6), flush=False)\n"
                           "sys.stdout.flush()\n";
    char spec[1024];
    snprintf(spec, sizeof spec, "[{\"name\": \"command\", \"argv\": [\"python3\", \"%s\"], \"timeout_s\": 60}]",
             script(echo_len));
    zen_rewards *r = NULL;
    assert_int_equal(zen_rewards_create(&r, spec, "", 16, "test"), 0);
    zen_reward_item *it = calloc(N, sizeof *it);
    double *per = calloc(N, sizeof(double)), *total = calloc(N, sizeof(double));
    static char text[N][48];
    int32_t ids[1] = {5};
    for (int i = 0; i < N; i++) {
        snprintf(text[i], sizeof text[i], "%.*s", 1 + i % 40, "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopq");
        it[i] = (zen_reward_item){"p", text[i], ids, 1, NULL, 0, i / 8, i % 8};
    }
    int external = 0;
    assert_int_equal(zen_rewards_score(r, it, N, per, total, &external), 0);
    for (int i = 0; i < N; i++) assert_true(fabs(per[i] - ((1 + i % 40) + (i % 8) / 1e6)) < 1e-9);
    zen_rewards_free(r);
    free(it), free(per), free(total);
    unlink(script_path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answer),
        cmocka_unit_test(test_regex_think_overlong),
        cmocka_unit_test(test_weights_and_nulls),
        cmocka_unit_test(test_command),
        cmocka_unit_test(test_command_large_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
