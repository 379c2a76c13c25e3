"""tests/reference/qwen3_lora_ref.py: an independent float64 PyTorch
implementation of the Qwen3 decoder with PEFT LoRA, written from Hugging Face's
modeling_qwen3.py and PEFT's lora/layer.py (not from zen's C code). Autograd
gives the reference gradients of the LoRA A and B matrices, and of DoRA's
magnitude vectors m (PEFT's lora/dora.py: y = x W^T + (m/n - 1) x W^T +
(m/n) s x A^T B^T with n = ||W + s B A|| per output row, detached).

Documents (packed sequences): `docs` [B, T] labels each input with its
document; positions restart at 0 where the label changes and a query attends
only to keys of its own document, as Hugging Face does with packed
`position_ids` and TRL/torchtune with a block-causal mask."""
import math

import torch

from zen_files import MODULES


def rms_norm(x, weight, eps):
    # Qwen3RMSNorm: x * rsqrt(mean(x^2) + eps), then * weight
    variance = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_cos_sin(positions, head_dim, theta):
    """cos, sin [..., hd] at integer positions [...]"""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    freqs = torch.as_tensor(positions, dtype=torch.float64)[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)  # not interleaved
    return emb.cos(), emb.sin()


def document_positions(docs):
    """[B, T] position of each input within its run of equal labels"""
    docs = torch.as_tensor(docs)
    t = torch.arange(docs.shape[1]).expand(docs.shape)
    starts = torch.ones(docs.shape, dtype=torch.bool)
    starts[:, 1:] = docs[:, 1:] != docs[:, :-1]
    run_start = torch.where(starts, t, torch.zeros_like(t)).cummax(dim=1).values
    return t - run_start


class Qwen3LoraReference:
    """float64 by default (the reference); scripts/bench_cpu uses it in float32
    with dropout as the PyTorch peer of a training step, and with
    weight_dtype=torch.bfloat16 (the weight matrices stored in bf16, as a
    PyTorch user loads a bf16 checkpoint) under torch.autocast for bf16."""

    def __init__(self, config, weights, adapter_config=None, adapter=None, dtype=torch.float64, dropout=0.0,
                 weight_dtype=None):
        self.cfg = config
        self.dtype = dtype
        self.dropout = dropout
        self.masks = None  # or f(layer, target, shape) -> the dropout mask (scaled) of that projection's input
        self.dora_clean_base = False  # DoRA with dropout: the (m/n - 1) term on x (mlx-lm), not dropout(x) (PEFT)
        self.w = {k: torch.tensor(v, dtype=weight_dtype if weight_dtype is not None and v.ndim == 2 else dtype)
                  for k, v in weights.items()}
        self.lora = {}
        self.scale = 0.0
        self.dora = False
        if adapter_config is not None:
            r, alpha = adapter_config["r"], adapter_config["lora_alpha"]
            self.scale = alpha / math.sqrt(r) if adapter_config.get("use_rslora") else alpha / r
            self.dora = bool(adapter_config.get("use_dora"))
            for k, v in adapter.items():
                self.lora[k] = torch.tensor(v, dtype=dtype, requires_grad=True)

    def linear(self, x, layer, target):
        prefix = f"model.layers.{layer}.{MODULES[target]}.{target}"
        y = x @ self.w[prefix + ".weight"].T
        a = self.lora.get(f"base_model.model.{prefix}.lora_A.weight")
        x_clean = x
        if a is not None:  # PEFT: base(x) + lora_B(lora_A(dropout(x))) * scaling
            b = self.lora[f"base_model.model.{prefix}.lora_B.weight"]
            if self.masks is not None:  # zen's own masks (zen_dropout.py): [rows, in] of this projection
                x = x * torch.as_tensor(self.masks(layer, target, x.shape), dtype=self.dtype)
            elif self.dropout > 0:
                x = torch.nn.functional.dropout(x, self.dropout, training=True)
            lora = (x @ a.T) @ b.T * self.scale
            if self.dora:  # PEFT's DoRA: the norm of W + s B A per output row, detached
                w = self.w[prefix + ".weight"].to(self.dtype)
                norm = torch.linalg.norm(w + self.scale * (b @ a), dim=1).detach()
                g = self.lora[f"base_model.model.{prefix}.lora_magnitude_vector"] / norm
                return y + (g - 1) * ((x_clean if self.dora_clean_base else x) @ w.T) + g * lora
            y = y + lora
        return y

    def logits(self, tokens, docs=None):
        """tokens [B, T]; docs [B, T] document labels (None: one document per row)"""
        c = self.cfg
        B, T = tokens.shape
        nh, nkv, hd, eps = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], c["rms_norm_eps"]
        if docs is None:
            docs = torch.zeros((B, T), dtype=torch.long)
        docs = torch.as_tensor(docs)
        cos, sin = rope_cos_sin(document_positions(docs), hd, c["rope_theta"])  # [B, T, hd]
        cos, sin = cos.to(self.dtype)[:, None], sin.to(self.dtype)[:, None]     # [B, 1, T, hd]
        # key j is seen by query i when j <= i and both lie in one document
        seen = torch.ones((T, T), dtype=torch.bool).tril() & (docs[:, :, None] == docs[:, None, :])  # [B, T, T]
        causal = torch.zeros((B, 1, T, T), dtype=self.dtype).masked_fill(~seen[:, None], float("-inf"))
        x = self.w["model.embed_tokens.weight"][torch.as_tensor(tokens, dtype=torch.long)].to(self.dtype)
        for l in range(c["num_hidden_layers"]):
            p = f"model.layers.{l}."
            h = rms_norm(x, self.w[p + "input_layernorm.weight"], eps)
            q = self.linear(h, l, "q_proj").view(B, T, nh, hd)
            k = self.linear(h, l, "k_proj").view(B, T, nkv, hd)
            v = self.linear(h, l, "v_proj").view(B, T, nkv, hd)
            q = rms_norm(q, self.w[p + "self_attn.q_norm.weight"], eps).transpose(1, 2)
            k = rms_norm(k, self.w[p + "self_attn.k_norm.weight"], eps).transpose(1, 2)
            v = v.transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            k = k.repeat_interleave(nh // nkv, dim=1)  # repeat_kv: head h reads kv head h // n_rep
            v = v.repeat_interleave(nh // nkv, dim=1)
            scores = q @ k.transpose(-1, -2) * hd ** -0.5 + causal
            att = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, nh * hd)
            x = x + self.linear(att, l, "o_proj")
            h = rms_norm(x, self.w[p + "post_attention_layernorm.weight"], eps)
            mlp = torch.nn.functional.silu(self.linear(h, l, "gate_proj")) * self.linear(h, l, "up_proj")
            x = x + self.linear(mlp, l, "down_proj")
        x = rms_norm(x, self.w["model.norm.weight"], eps)
        head = self.w["model.embed_tokens.weight"] if c["tie_word_embeddings"] else self.w["lm_head.weight"]
        return x @ head.T

    def loss(self, inputs, targets, mask, docs=None):
        logits = self.logits(torch.as_tensor(inputs), docs).to(self.dtype)
        V = logits.shape[-1]
        tok_loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, V), torch.as_tensor(targets, dtype=torch.long).reshape(-1), reduction="none")
        m = torch.as_tensor(mask, dtype=self.dtype).reshape(-1)
        return (tok_loss * m).sum() / m.sum()

    def loss_and_grads(self, inputs, targets, mask, docs=None):
        loss = self.loss(inputs, targets, mask, docs)
        loss.backward()
        return loss.item(), {k: v.grad.numpy() for k, v in self.lora.items()}
