/* tests/test_train.c: the optimizer against a hand-computed two-step AdamW
 * example (the numbers agree with torch.optim.AdamW), clipping, schedules at
 * their boundaries, the run config's checks, the data order, and the packing
 * of documents into windows (a hand-worked example, and the invariants on
 * random corpora). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/pack.h"
#include "data/seq_order.h"
#include "optim/adamw.h"
#include "optim/schedule.h"
#include "train/run_config.h"
#include "util/error.h"
#include "util/rng.h"

static zk_backend *be;

/* p0 = 1, gradients 0.5 then -0.25, lr 0.1, betas (0.9, 0.999), eps 1e-8, wd 0.1:
 * step 1: p = 0.99 - 0.1 * 0.5 / (0.5 + 1e-8)                     = 0.890000002
 * step 2: p = 0.881100002 - 0.1 * (0.02/0.19) / (sqrt(0.00031225/0.001999) + 1e-8)
 *                                                                 = 0.854466299 */
static void test_adamw_two_steps(void **state) {
    (void)state;
    zen_adamw opt;
    assert_int_equal(zen_adamw_create(&opt, be, 1, 0.9f, 0.999f, 1e-8f, 0.1f, 0.0f), 0);
    float p = 1.0f, g = 0.5f;
    zen_adamw_update(&opt, &p, &g, fabs(g), 0.1f);
    assert_true(fabs(p - 0.890000002) < 1e-6);
    g = -0.25f;
    zen_adamw_update(&opt, &p, &g, fabs(g), 0.1f);
    assert_true(fabs(p - 0.8544662987) < 1e-6);
    assert_int_equal(opt.step, 2);
    zen_adamw_free(&opt);
}

static void test_clipping(void **state) {
    (void)state;
    /* gradient (3, 4) has norm 5; clipped to 1 it is (0.6, 0.8). With lr tiny and
     * one step, Adam's update is lr * sign-like m_hat/sqrt(v_hat) = lr for each
     * element regardless of scale, so check the moments instead */
    zen_adamw opt;
    assert_int_equal(zen_adamw_create(&opt, be, 2, 0.9f, 0.999f, 1e-8f, 0.0f, 1.0f), 0);
    float p[2] = {0, 0}, g[2] = {3, 4};
    double norm = zen_grad_norm(be, g, 2);
    assert_true(fabs(norm - 5.0) < 1e-9);
    zen_adamw_update(&opt, p, g, norm, 1e-3f);
    /* m = (1 - 0.9) * clipped g; clip factor 1 / (5 + 1e-6) */
    assert_true(fabs(opt.m[0] - 0.1 * 3 / (5 + 1e-6)) < 1e-7);
    assert_true(fabs(opt.m[1] - 0.1 * 4 / (5 + 1e-6)) < 1e-7);
    /* below the limit nothing is scaled */
    opt.grad_clip = 10.0f;
    zen_adamw_update(&opt, p, g, norm, 1e-3f);
    assert_true(fabs(opt.m[0] - (0.9 * 0.1 * 3 / (5 + 1e-6) + 0.1 * 3)) < 1e-6);
    zen_adamw_free(&opt);
}

static void test_schedules(void **state) {
    (void)state;
    zen_schedule s = {ZEN_SCHED_COSINE, 1.0, 10, 110, 0.1};
    assert_true(fabs(zen_schedule_lr(&s, 0) - 0.1) < 1e-12);   /* warm-up starts at lr / W */
    assert_true(fabs(zen_schedule_lr(&s, 4) - 0.5) < 1e-12);
    assert_true(fabs(zen_schedule_lr(&s, 9) - 1.0) < 1e-12);   /* the last warm-up step reaches lr */
    assert_true(fabs(zen_schedule_lr(&s, 10) - 1.0) < 1e-12);  /* decay starts at the peak */
    assert_true(fabs(zen_schedule_lr(&s, 109) - 0.1) < 1e-12); /* and ends at the floor */
    /* half-way through the decay, cosine is at the midpoint */
    zen_schedule odd = {ZEN_SCHED_COSINE, 1.0, 0, 101, 0.0};
    assert_true(fabs(zen_schedule_lr(&odd, 50) - 0.5) < 1e-12);
    zen_schedule lin = {ZEN_SCHED_LINEAR, 2.0, 0, 5, 0.0};
    assert_true(fabs(zen_schedule_lr(&lin, 0) - 2.0) < 1e-12);
    assert_true(fabs(zen_schedule_lr(&lin, 1) - 1.5) < 1e-12);
    assert_true(fabs(zen_schedule_lr(&lin, 4) - 0.0) < 1e-12);
    zen_schedule con = {ZEN_SCHED_CONSTANT, 3.0, 2, 10, 0.5};
    assert_true(fabs(zen_schedule_lr(&con, 0) - 1.5) < 1e-12);
    assert_true(fabs(zen_schedule_lr(&con, 9) - 3.0) < 1e-12);
    zen_schedule one = {ZEN_SCHED_COSINE, 1.0, 0, 1, 0.2}; /* a single update: at the floor */
    assert_true(fabs(zen_schedule_lr(&one, 0) - 0.2) < 1e-12);
}

static void expect_config_error(zen_run_config *c, const char *json, const char *fragment) {
    int rc = zen_run_config_apply_json(c, json, "run.json");
    if (!rc) rc = zen_run_config_validate(c);
    if (rc != ZEN_ERR_INPUT || !strstr(zen_last_error(), fragment))
        fail_msg("rc %d, '%s' (expected '%s')", rc, zen_last_error(), fragment);
}

static void test_run_config(void **state) {
    (void)state;
    zen_run_config c;
    zen_run_config_defaults(&c);
    const char *base = "{\"model\": \"m\", \"data\": \"d.h5\", \"out_dir\": \"o\"";
    char buf[512];
    snprintf(buf, sizeof buf, "%s, \"lr\": 1e-3, \"lora\": {\"r\": 4, \"targets\": [\"q\", \"v_proj\"]}}", base);
    assert_int_equal(zen_run_config_apply_json(&c, buf, "run.json"), 0);
    assert_int_equal(zen_run_config_validate(&c), 0);
    assert_int_equal(c.lora_r, 4);
    assert_string_equal(c.lora_targets, "q_proj,v_proj");
    assert_int_equal(zen_run_config_set(&c, "lora.dropout=0.1"), 0);
    assert_int_equal(zen_run_config_set(&c, "recompute=true"), 0);
    assert_true(c.recompute && fabs(c.lora_dropout - 0.1) < 1e-12);
    /* a value that needs 16 digits (cJSON's printer would keep 15, one ulp
     * off: the fuzzer found it) and one that needs 17 */
    assert_int_equal(zen_run_config_set(&c, "beta2=0.99111111111111111111"), 0);
    assert_int_equal(zen_run_config_set(&c, "weight_decay=0.30000000000000004"), 0);
    /* the resolved JSON reads back to the same config */
    char *json = zen_run_config_to_json(&c);
    zen_run_config back;
    zen_run_config_defaults(&back);
    assert_int_equal(zen_run_config_apply_json(&back, json, "resolved"), 0);
    free(json);
    assert_true(back.beta2 == c.beta2 && back.weight_decay == c.weight_decay);
    char diffs[1024];
    assert_int_equal(zen_run_config_trajectory_diffs(&c, &back, NULL, diffs, sizeof diffs), 0);
    /* every changed key is named, not only the first; allowed ones are not */
    back.lr = 2e-3;
    back.lora_alpha = 32;
    back.max_steps = 99;
    strcpy(back.schedule, "linear");
    const char *allowed[] = {"max_steps", "epochs", NULL};
    assert_int_equal(zen_run_config_trajectory_diffs(&c, &back, allowed, diffs, sizeof diffs), 3);
    assert_non_null(strstr(diffs, "'lr' (0.001, now 0.002)"));
    assert_non_null(strstr(diffs, "'lora.alpha'"));
    assert_non_null(strstr(diffs, "'schedule' (cosine, now linear)"));
    assert_null(strstr(diffs, "max_steps"));
    assert_int_equal(zen_run_config_trajectory_diffs(&c, &back, NULL, diffs, sizeof diffs), 4);

    /* the command line wins: --set val_data replaces the recipe's val_fraction, with a note */
    zen_run_config_defaults(&c);
    snprintf(buf, sizeof buf, "%s, \"val_fraction\": 0.1}", base);
    assert_int_equal(zen_run_config_apply_json(&c, buf, "run.json"), 0);
    assert_int_equal(zen_run_config_set(&c, "val_data=v.h5"), 0);
    char note[256];
    assert_int_equal(zen_run_config_resolve(&c, note, sizeof note), 0);
    assert_int_equal(zen_run_config_validate(&c), 0);
    assert_true(c.val_fraction == 0.0 && !strcmp(c.val_data, "v.h5"));
    assert_non_null(strstr(note, "--set val_data overrides the recipe's 'val_fraction'"));
    /* and the other way round */
    zen_run_config_defaults(&c);
    snprintf(buf, sizeof buf, "%s, \"val_data\": \"v.h5\"}", base);
    assert_int_equal(zen_run_config_apply_json(&c, buf, "run.json"), 0);
    assert_int_equal(zen_run_config_set(&c, "val_fraction=0.2"), 0);
    assert_int_equal(zen_run_config_resolve(&c, note, sizeof note), 0);
    assert_true(c.val_fraction == 0.2 && !c.val_data[0]);
    /* both in the file: still refused */
    zen_run_config_defaults(&c);
    snprintf(buf, sizeof buf, "%s, \"val_data\": \"v.h5\", \"val_fraction\": 0.1}", base);
    assert_int_equal(zen_run_config_apply_json(&c, buf, "run.json"), 0);
    assert_int_equal(zen_run_config_resolve(&c, note, sizeof note), 0);
    assert_string_equal(note, "");
    assert_int_equal(zen_run_config_validate(&c), ZEN_ERR_INPUT);
    /* strict JSON: a repeated key or trailing garbage is refused */
    zen_run_config_defaults(&c);
    expect_config_error(&c, "{\"lr\": 1e-3, \"lr\": 1}", "'lr' appears twice");
    expect_config_error(&c, "{\"lr\": 1e-3} {\"lr\": 1}", "more after the value");

    zen_run_config_defaults(&c);
    expect_config_error(&c, "{\"learning_rate\": 1}", "unknown key 'learning_rate'");
    expect_config_error(&c, "{\"lora\": {\"rank\": 4}}", "unknown key 'lora.rank'");
    expect_config_error(&c, "{\"lr\": \"fast\"}", "'lr' must be a number");
    expect_config_error(&c, "{\"batch_size\": 2.5}", "'batch_size' must be an integer");
    expect_config_error(&c, "{\"recompute\": 1}", "'recompute' must be true, false or \"auto\"");
    expect_config_error(&c, "{\"dtype\": 16}", "'dtype' must be a string");
    expect_config_error(&c, "{\"lora\": {\"targets\": [\"q\", \"lm_head\"]}}", "lm_head");
    zen_run_config_defaults(&c);
    snprintf(buf, sizeof buf, "%s, \"batch_size\": 0}", base);
    expect_config_error(&c, buf, "'batch_size' = 0 is out of range");
    zen_run_config_defaults(&c);
    snprintf(buf, sizeof buf, "%s, \"beta2\": 1.5}", base);
    expect_config_error(&c, buf, "'beta2'");
    zen_run_config_defaults(&c);
    snprintf(buf, sizeof buf, "%s, \"schedule\": \"step\"}", base);
    expect_config_error(&c, buf, "'schedule' = 'step'");
    zen_run_config_defaults(&c);
    expect_config_error(&c, "{\"data\": \"d.h5\", \"out_dir\": \"o\"}", "'model' is not set");
    assert_int_equal(zen_run_config_set(&c, "nonsense=1"), ZEN_ERR_INPUT);
    assert_non_null(strstr(zen_last_error(), "nonsense"));
    assert_int_equal(zen_run_config_set(&c, "seq_len=abc"), ZEN_ERR_INPUT);
    assert_int_equal(zen_run_config_set(&c, "seq_len"), ZEN_ERR_INPUT);
    assert_int_equal(zen_run_config_set(&c, "recompute=maybe"), ZEN_ERR_INPUT);
    /* recompute auto: on for cuda, off for cpu; an explicit value wins */
    assert_int_equal(zen_run_config_set(&c, "recompute=auto"), 0);
    assert_int_equal(zen_run_config_recompute(&c), 0);
    assert_int_equal(zen_run_config_set(&c, "device=cuda"), 0);
    assert_int_equal(zen_run_config_recompute(&c), 1);
    assert_int_equal(zen_run_config_set(&c, "recompute=false"), 0);
    assert_int_equal(zen_run_config_recompute(&c), 0);
    assert_int_equal(zen_run_config_set(&c, "device=cpu"), 0);
}

static void test_seq_order(void **state) {
    (void)state;
    zen_seq_order a, b;
    assert_int_equal(zen_seq_order_init(&a, 10, 50, 7, 1), 0);
    assert_int_equal(zen_seq_order_init(&b, 10, 50, 7, 1), 0);
    int seen[50] = {0}, same_as_identity = 0, differs_next_epoch = 0;
    for (int i = 0; i < 50; i++) {
        int64_t s = zen_seq_order_get(&a, 3, i);
        assert_true(s >= 10 && s < 60);
        seen[s - 10]++;
        same_as_identity += s == 10 + i;
    }
    for (int i = 0; i < 50; i++) assert_int_equal(seen[i], 1); /* a permutation */
    assert_true(same_as_identity < 10);
    /* the same (seed, epoch) gives the same order, in any order of asking */
    for (int i = 49; i >= 0; i--) {
        int64_t x = zen_seq_order_get(&b, 3, i);
        assert_true(x == zen_seq_order_get(&a, 3, i));
        differs_next_epoch += x != zen_seq_order_get(&a, 4, i);
    }
    assert_true(differs_next_epoch > 30);
    zen_seq_order_free(&a);
    zen_seq_order_free(&b);
    zen_seq_order plain;
    zen_seq_order_init(&plain, 5, 3, 1, 0);
    assert_true(zen_seq_order_get(&plain, 9, 2) == 7);
    zen_seq_order_free(&plain);
}

/* T = 10, documents of 6, 4, 3, 3, 3, 25, 0 and 7 tokens, longest first:
 * 25 fills windows 1-3 (room 5 left), 7 opens window 4 (room 3), 6 opens
 * window 5 (room 4), 4 fills window 5, the first 3 fills window 4, the second
 * goes beside 25 (room 2), the third opens window 6 (room 7): 6 windows and 9
 * pad tokens; the empty document is left out. */
static void test_pack_example(void **state) {
    (void)state;
    const int64_t len[] = {6, 4, 3, 3, 3, 25, 0, 7};
    zen_pack_layout l;
    assert_int_equal(zen_pack_plan(len, 8, 10, 1, &l), 0);
    assert_int_equal(l.windows, 6);
    assert_int_equal(l.pad_tokens, 9);
    assert_int_equal(l.split_docs, 1);
    assert_int_equal(l.n_placed, 7);
    for (int64_t i = 0; i < l.n_placed; i++) {
        if (l.order[i] == 5) { /* the long document, then a 3, then 2 pad tokens */
            assert_true(i + 1 < l.n_placed && len[l.order[i + 1]] == 3 && l.pad_after[i + 1] == 2);
            assert_int_equal(l.pad_after[i], 0);
        }
        if (l.order[i] == 7) assert_true(i + 1 < l.n_placed && len[l.order[i + 1]] == 3 && l.pad_after[i + 1] == 0);
        if (l.order[i] == 0) assert_true(i + 1 < l.n_placed && l.order[i + 1] == 1 && l.pad_after[i + 1] == 0);
    }
    zen_pack_layout_free(&l);
    assert_int_equal(zen_pack_plan(len, 8, 0, 1, &l), ZEN_ERR_INPUT);
}

/* random corpora: each document once; one of <= T tokens inside a window,
 * a longer one from a window's start; padding ends windows; the same seed
 * gives the same layout, another seed another order */
static void test_pack_invariants(void **state) {
    (void)state;
    enum { N = 3000 };
    static int64_t len[N];
    const int64_t Ts[] = {1, 7, 64, 512};
    for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
        int64_t T = Ts[ti], total = 0;
        zen_rng rng;
        zen_rng_seed(&rng, (uint64_t)T);
        for (int i = 0; i < N; i++) {
            uint64_t r = zen_rng_next(&rng);
            len[i] = r % 10 == 0 ? (int64_t)(r >> 8) % (3 * T) + 1 : (int64_t)(r >> 8) % (T / 4 + 1) + 1;
            total += len[i];
        }
        zen_pack_layout l, same, other;
        assert_int_equal(zen_pack_plan(len, N, T, 5, &l), 0);
        assert_int_equal(zen_pack_plan(len, N, T, 5, &same), 0);
        assert_int_equal(zen_pack_plan(len, N, T, 6, &other), 0);
        static char seen[N];
        memset(seen, 0, sizeof seen);
        int64_t at = 0, pads = 0;
        for (int64_t i = 0; i < l.n_placed; i++) {
            int64_t d = l.order[i];
            assert_true(d >= 0 && d < N && !seen[d]);
            seen[d] = 1;
            if (len[d] <= T) assert_true(at / T == (at + len[d] - 1) / T);
            else assert_true(at % T == 0);
            at += len[d] + l.pad_after[i];
            pads += l.pad_after[i];
            if (l.pad_after[i]) assert_true(at % T == 0);
            assert_true(l.order[i] == same.order[i] && l.pad_after[i] == same.pad_after[i]);
        }
        assert_int_equal(l.n_placed, N);
        assert_true(at == l.windows * T && pads == l.pad_tokens && total + pads == at);
        assert_int_equal(other.windows, l.windows); /* ties broken otherwise: the same number of windows here */
        int differs = 0;
        for (int64_t i = 0; i < l.n_placed; i++) differs += l.order[i] != other.order[i];
        assert_true(differs > N / 2);
        printf("pack T=%lld: %lld windows for %lld tokens, padding %.2f%%\n", (long long)T, (long long)l.windows,
               (long long)total, 100.0 * (double)pads / (double)at);
        if (T >= 64) assert_true(pads < at / 50); /* best fit leaves little room with many short documents */
        zen_pack_layout_free(&l);
        zen_pack_layout_free(&same);
        zen_pack_layout_free(&other);
    }
}

int main(void) {
    be = zk_open("cpu", "f32");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adamw_two_steps), cmocka_unit_test(test_clipping),
        cmocka_unit_test(test_schedules),       cmocka_unit_test(test_run_config),
        cmocka_unit_test(test_seq_order),       cmocka_unit_test(test_pack_example),
        cmocka_unit_test(test_pack_invariants),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    zk_close(be);
    return rc;
}
