/* tests/fuzz/fuzz_model_config.c: config.json. A config that parses has
 * every size in its bounds, so the parameter count and the memory plan of a
 * step are computed without overflow. */
#include "fuzz_common.h"
#include "model/config.h"
#include "model/decoder.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_text(data, size);
    zen_config c;
    if (zen_config_parse(&c, text, "config.json")) {
        fuzz_check_message();
    } else {
        FUZZ_ASSERT(c.hidden >= 1 && c.hidden <= ZEN_CONFIG_MAX_WIDTH && c.layers >= 1 && c.layers <= ZEN_CONFIG_MAX_LAYERS);
        FUZZ_ASSERT(c.heads % c.kv_heads == 0 && c.head_dim % 2 == 0);
        FUZZ_ASSERT(zen_config_param_count(&c) > 0);
        zen_plan p = zen_plan_make(&c, "cpu", ZEN_F32, 1 << 20, ZEN_BF16, 8, 0x7f, 1, 16, 1, 0);
        FUZZ_ASSERT(p.total >= p.saved_acts);
    }
    free(text);
    return 0;
}
