"""scripts/bench_gpu_torch.py: the PyTorch side of scripts/bench_gpu, run in its
own process so its GPU memory is measured alone. Trains the same LoRA (r=8,
alpha=16, dropout 0.05, all seven targets, AdamW lr 1e-4, clip 1.0) on the same
model directory and tokens, batch 1, and prints one JSON line:
{"impl", "tokens_per_s", "peak_bytes", "reserved_bytes", "losses"}.

--impl peft          transformers + PEFT, bf16 weights, SDPA attention,
                     gradient checkpointing (what a PEFT user runs at seq 2048)
--impl peft-compile  the same under torch.compile
--impl ref           zen's float reference model (tests/reference/
                     qwen3_lora_ref.py) with hand-written LoRA: no transformers
                     or PEFT needed (used to test this script without a GPU)

usage: bench_gpu_torch.py --model DIR --data FILE.h5 --seq-len T --steps N --impl I [--device cuda]"""
import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from zen_bench import TARGETS, fresh_adapter  # noqa: E402
WARMUP = 2


def load_tokens(path, n):
    import h5py
    with h5py.File(path) as f:
        return f["tokens"][:n].astype(np.int64)


def peft_model(model_dir, device, compile_it):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.bfloat16, attn_implementation="sdpa")
    model.to(device)
    model.config.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=TARGETS,
                                             task_type="CAUSAL_LM"))
    params = [p for p in model.parameters() if p.requires_grad]
    forward = model
    if compile_it:
        forward = torch.compile(model)

    def loss_fn(inputs, targets):
        logits = forward(input_ids=inputs).logits
        return torch.nn.functional.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1))
    return params, loss_fn


def ref_model(model_dir):
    import torch
    from qwen3_lora_ref import Qwen3LoraReference
    from zen_files import read_model_dir
    cfg, weights = read_model_dir(model_dir)
    adapter = fresh_adapter(cfg, 8)
    ref = Qwen3LoraReference(cfg, weights, {"r": 8, "lora_alpha": 16}, adapter, dtype=torch.float32, dropout=0.05)
    params = list(ref.lora.values())

    def loss_fn(inputs, targets):
        x, y = inputs.cpu().numpy(), targets.cpu().numpy()
        return ref.loss(x, y, np.ones_like(y))
    return params, loss_fn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--seq-len", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--impl", choices=["peft", "peft-compile", "ref"], required=True)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    import torch
    torch.manual_seed(0)
    cuda = args.device.startswith("cuda")
    if args.impl == "ref":
        params, loss_fn = ref_model(args.model)
    else:
        params, loss_fn = peft_model(args.model, args.device, args.impl == "peft-compile")
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    T = args.seq_len
    tokens = load_tokens(args.data, args.steps * T + 1)
    losses, times = [], []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for step in range(args.steps):
        seq = torch.from_numpy(tokens[step * T:step * T + T + 1]).to(args.device)
        inputs, targets = seq[:-1].unsqueeze(0), seq[1:].unsqueeze(0)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.time()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(inputs, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.time() - t0)
        losses.append(float(loss))
    timed = times[WARMUP:]
    print(json.dumps({"impl": args.impl, "tokens_per_s": T * len(timed) / sum(timed),
                      "peak_bytes": torch.cuda.max_memory_allocated() if cuda else None,
                      "reserved_bytes": torch.cuda.max_memory_reserved() if cuda else None,
                      "losses": losses, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
