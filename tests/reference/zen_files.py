"""tests/reference/zen_files.py: reading and writing the files zen exchanges
(SafeTensors, PEFT adapters, Hugging Face model directories, zen-tokens-v1 HDF5)
for the Python reference tests, written from the format specifications with
numpy only, independently of zen's C code."""
import json
import os
import struct

import numpy as np

DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "U8": 1}


def f32_to_bf16_bits(x):
    """Round float32 to bfloat16 (nearest even), returning uint16 bits."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def bf16_bits_to_f32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def encode(array, dtype):
    a = np.asarray(array, dtype=np.float32)
    if dtype == "F32":
        return a.astype("<f4").tobytes()
    if dtype == "F16":
        return a.astype("<f2").tobytes()
    if dtype == "BF16":
        return f32_to_bf16_bits(a).astype("<u2").tobytes()
    raise ValueError(dtype)


def decode(raw, dtype, shape):
    if dtype == "F32":
        a = np.frombuffer(raw, dtype="<f4")
    elif dtype == "F16":
        a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    elif dtype == "BF16":
        a = bf16_bits_to_f32(np.frombuffer(raw, dtype="<u2"))
    elif dtype == "F64":
        a = np.frombuffer(raw, dtype="<f8")
    else:
        raise ValueError(dtype)
    return a.astype(np.float64).reshape(shape)


def write_safetensors(path, tensors, dtype="F32", metadata=None):
    """tensors: dict name -> float array (written in insertion order)."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, arr in tensors.items():
        raw = encode(arr, dtype)
        header[name] = {"dtype": dtype, "shape": list(np.shape(arr)), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """Returns (dict name -> float64 array, metadata dict)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        out[name] = decode(data[base + b:base + e], info["dtype"], info["shape"])
    return out, meta


def read_model_dir(path):
    """config dict and all weights of a Hugging Face model directory (single or sharded)."""
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    index = os.path.join(path, "model.safetensors.index.json")
    weights = {}
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        for s in shards:
            weights.update(read_safetensors(os.path.join(path, s))[0])
    else:
        weights = read_safetensors(os.path.join(path, "model.safetensors"))[0]
    return config, weights


MODULES = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
           "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def proj_dims(cfg, target):
    C, F, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]
    qd, kvd = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    return {"q_proj": (C, qd), "k_proj": (C, kvd), "v_proj": (C, kvd), "o_proj": (qd, C),
            "gate_proj": (C, F), "up_proj": (C, F), "down_proj": (F, C)}[target]


def peft_key(layer, target, half):
    return f"base_model.model.model.layers.{layer}.{MODULES[target]}.{target}.lora_{half}.weight"


def write_adapter(path, cfg, r, alpha, targets, rng, rslora=False, dtype="F32", b_scale=0.05):
    """A PEFT adapter with non-zero A and B (B != 0 so every gradient is exercised)."""
    os.makedirs(path, exist_ok=True)
    tensors = {}
    for l in range(cfg["num_hidden_layers"]):
        for t in targets:
            fin, fout = proj_dims(cfg, t)
            tensors[peft_key(l, t, "A")] = rng.uniform(-1, 1, (r, fin)) / np.sqrt(fin)
            tensors[peft_key(l, t, "B")] = rng.uniform(-b_scale, b_scale, (fout, r))
    write_safetensors(os.path.join(path, "adapter_model.safetensors"), tensors, dtype, {"format": "pt"})
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha, "lora_dropout": 0.0,
              "target_modules": list(targets), "use_rslora": rslora, "bias": "none",
              "base_model_name_or_path": "test"}
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump(config, f)


def write_dora_adapter(path, cfg, weights, r, alpha, targets, rng, rslora=False):
    """a PEFT DoRA adapter: A, B as write_adapter, m = ||W + s B A|| x U(0.7, 1.3) per row"""
    write_adapter(path, cfg, r=r, alpha=alpha, targets=targets, rng=rng, rslora=rslora, b_scale=0.2)
    acfg, ad = read_adapter(path)
    s = alpha / np.sqrt(r) if rslora else alpha / r
    for l in range(cfg["num_hidden_layers"]):
        for t in targets:
            key = f"base_model.model.model.layers.{l}.{MODULES[t]}.{t}"
            w = weights[f"model.layers.{l}.{MODULES[t]}.{t}.weight"]
            n = np.linalg.norm(w + s * ad[key + ".lora_B.weight"] @ ad[key + ".lora_A.weight"], axis=1)
            ad[key + ".lora_magnitude_vector"] = n * rng.uniform(0.7, 1.3, n.shape)
    write_safetensors(os.path.join(path, "adapter_model.safetensors"), ad, "F32", {"format": "pt"})
    acfg["use_dora"] = True
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump(acfg, f)


def read_adapter(path):
    with open(os.path.join(path, "adapter_config.json")) as f:
        config = json.load(f)
    tensors, _ = read_safetensors(os.path.join(path, "adapter_model.safetensors"))
    return config, tensors


def make_config(hidden, inter, layers, heads, kv_heads, head_dim, vocab, tied, theta=1e6, eps=1e-6):
    return {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": hidden,
            "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv_heads, "head_dim": head_dim, "rms_norm_eps": eps, "rope_theta": theta,
            "rope_scaling": None, "vocab_size": vocab, "tie_word_embeddings": tied,
            "max_position_embeddings": 512, "hidden_act": "silu", "torch_dtype": "float32"}


def write_model(path, cfg, rng, dtype="F32", std=0.15, embed_std=1.0, head_std=0.3):
    """A random model with random (non-unit) norm weights, so every weight matters."""
    os.makedirs(path, exist_ok=True)
    C, V, hd = cfg["hidden_size"], cfg["vocab_size"], cfg["head_dim"]
    w = {"model.embed_tokens.weight": rng.normal(0, embed_std, (V, C))}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = rng.uniform(0.5, 1.5, C)
        w[p + "post_attention_layernorm.weight"] = rng.uniform(0.5, 1.5, C)
        w[p + "self_attn.q_norm.weight"] = rng.uniform(0.5, 1.5, hd)
        w[p + "self_attn.k_norm.weight"] = rng.uniform(0.5, 1.5, hd)
        for t in MODULES:
            fin, fout = proj_dims(cfg, t)
            w[p + f"{MODULES[t]}.{t}.weight"] = rng.normal(0, std, (fout, fin))
    w["model.norm.weight"] = rng.uniform(0.5, 1.5, C)
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = rng.normal(0, head_std, (V, C))
    write_safetensors(os.path.join(path, "model.safetensors"), w, dtype, {"format": "pt"})
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)


def write_tokens(path, tokens, vocab_size, loss_mask=None, doc_offsets=None):
    import h5py
    with h5py.File(path, "w") as f:
        f.create_dataset("tokens", data=np.asarray(tokens, dtype=np.int32))
        if loss_mask is not None:
            f.create_dataset("loss_mask", data=np.asarray(loss_mask, dtype=np.uint8))
        if doc_offsets is not None:
            f.create_dataset("doc_offsets", data=np.asarray(doc_offsets, dtype=np.int64))
        f.attrs["vocab_size"] = vocab_size


def write_records(path, records, vocab, attribute, labels=None):
    """a file of records as data/records.h lays them out: per record its documents (the first, the prompt,
    loss_mask 0; the rest 1), the root attribute naming the layout and its count, and /labels when given"""
    import h5py
    toks, mask, offs = [], [], [0]
    for docs in records:
        for j, doc in enumerate(docs):
            toks += list(doc)
            mask += [int(j > 0)] * len(doc)
            offs.append(len(toks))
    with h5py.File(path, "w") as f:
        f.create_dataset("tokens", data=np.asarray(toks, np.int32))
        f.create_dataset("loss_mask", data=np.asarray(mask, np.uint8))
        f.create_dataset("doc_offsets", data=np.asarray(offs, np.int64))
        if labels is not None:
            f.create_dataset("labels", data=np.asarray(labels, np.uint8))
        f.attrs["vocab_size"] = vocab
        f.attrs[attribute] = len(records)


def write_pairs(path, pairs, vocab):
    """a preference file: per pair the prompt, chosen and rejected documents (root attribute preference_pairs)"""
    write_records(path, pairs, vocab, "preference_pairs")


def write_kto(path, records, vocab):
    """a KTO file: per record (prompt, completion, label) its prompt and completion documents, the root
    attribute kto_records and /labels (1 desirable, 0 undesirable)"""
    write_records(path, [(p, c) for p, c, _ in records], vocab, "kto_records", [int(bool(l)) for _, _, l in records])


def write_prompts(path, prompts, vocab, fields=None):
    """a prompts file (GRPO's): per record its prompt (loss_mask 0), the root attribute prompt_records, and each
    record's fields as JSON objects back to back in /record_json with /record_json_offsets"""
    import h5py
    import json
    write_records(path, [(p,) for p in prompts], vocab, "prompt_records")
    blobs = [json.dumps(f if f is not None else {}).encode() for f in (fields or [None] * len(prompts))]
    with h5py.File(path, "a") as f:
        f.create_dataset("record_json", data=np.frombuffer(b"".join(blobs) or b" ", np.uint8)[:sum(map(len, blobs))])
        f.create_dataset("record_json_offsets", data=np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64))


def compare_grad_files(ref_path, got_path):
    """Two `zen grad` outputs: (loss relative difference, largest per-tensor
    ||got - ref|| / ||ref||, cosine of all gradients concatenated)."""
    (gr, mr), (gg, mg) = read_safetensors(ref_path), read_safetensors(got_path)
    lr, lg = float(mr["loss"]), float(mg["loss"])
    grel = max(np.linalg.norm(gg[k] - gr[k]) / max(np.linalg.norm(gr[k]), 1e-30) for k in gr)
    a = np.concatenate([gr[k].ravel() for k in sorted(gr)])
    b = np.concatenate([gg[k].ravel() for k in sorted(gr)])
    return abs(lg - lr) / abs(lr), grel, float(a @ b / np.sqrt((a @ a) * (b @ b)))


def read_batch(path, T, B, first=0, doc_mask=True):
    """Sequences first .. first+B-1 as zen reads them: sequence i is
    tokens[i*T : i*T+T+1]. Returns inputs, targets, masks and docs [B, T]
    (each input's document number from /doc_offsets, None without it or
    without doc_mask); a target in another document than its input is
    masked out."""
    import h5py
    with h5py.File(path, "r") as f:
        tokens = f["tokens"][:]
        mask = f["loss_mask"][:] if "loss_mask" in f else np.ones_like(tokens, dtype=np.uint8)
        offsets = f["doc_offsets"][:] if "doc_offsets" in f and doc_mask else None
    rows = range(first, first + B)
    inputs = np.stack([tokens[i * T:i * T + T] for i in rows])
    targets = np.stack([tokens[i * T + 1:i * T + T + 1] for i in rows])
    masks = np.stack([mask[i * T + 1:i * T + T + 1] for i in rows])
    if offsets is None:
        return inputs, targets, masks, None
    doc = np.searchsorted(offsets, np.arange(len(tokens)), side="right") - 1  # document of every token
    docs = np.stack([doc[i * T:i * T + T] for i in rows])
    target_docs = np.stack([doc[i * T + 1:i * T + T + 1] for i in rows])
    return inputs, targets, masks * (docs == target_docs), docs


def read_docs(path):
    """every document of a zen-tokens file: [(token ids, loss mask)] as lists"""
    import h5py
    with h5py.File(path) as f:
        tok, mask, off = f["tokens"][:], f["loss_mask"][:], f["doc_offsets"][:]
    return [(tok[a:b].tolist(), mask[a:b].tolist()) for a, b in zip(off[:-1], off[1:])]
