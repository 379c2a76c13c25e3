/* tests/fuzz/fuzz_run_config.c: a zen train recipe. A recipe that applies
 * and validates writes out as JSON that reads back to the same run (no key
 * of the trajectory changes on the way). */
#include "fuzz_common.h"
#include "train/run_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_text(data, size);
    zen_run_config c;
    zen_run_config_defaults(&c);
    int rc = zen_run_config_apply_json(&c, text, "run.json");
    char note[512];
    if (!rc) rc = zen_run_config_resolve(&c, note, sizeof note);
    if (!rc) rc = zen_run_config_validate(&c);
    if (rc) {
        fuzz_check_message();
    } else {
        char *json = zen_run_config_to_json(&c);
        FUZZ_ASSERT(json != NULL);
        zen_run_config back;
        zen_run_config_defaults(&back);
        FUZZ_ASSERT(zen_run_config_apply_json(&back, json, "resolved") == 0);
        FUZZ_ASSERT(zen_run_config_validate(&back) == 0);
        char diffs[2048];
        FUZZ_ASSERT(zen_run_config_trajectory_diffs(&c, &back, NULL, diffs, sizeof diffs) == 0);
        free(json);
    }
    free(text);
    return 0;
}
