/* tests/fuzz/fuzz_adapter_config.c: a PEFT adapter_config.json, with the
 * checks zen_lora_load_peft makes before it reads any tensor. */
#include "fuzz_common.h"
#include "model/lora.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (zen_lora_check_config_text((const char *)data, size, "adapter_config.json")) fuzz_check_message();
    return 0;
}
