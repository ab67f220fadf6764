#!/usr/bin/env python3
"""Runs the reference GPTQ (IST-DASLab gptq.py/quant.py) and AWQ (mit-han-lab llm-awq) on a
Llama checkpoint with quantfleet's calibration and evaluation protocol, for scripts/quality.sh.

The reference code is not part of this repository: fetch the two public repositories yourself
and pass their directories (--gptq-src, --awq-src). This file is only the driver that feeds them
the same data quantfleet uses:

  * documents: the file split on "\\n\\f\\n", each stripped, empty ones dropped, each encoded as
    [BOS] + ids with the model's tokenizer.json, all concatenated into one stream;
  * calibration draw k: samples first..first+n-1 of seqlen tokens (first = k * n by default),
    sample i = tokens [i*seqlen, (i+1)*seqlen) — quantfleet's --calibration-offset;
  * evaluation: window i = tokens [i*ctx, (i+1)*ctx], loss over its ctx predictions,
    perplexity = exp(mean NLL) over windows 0..N-1 (quantfleet eval).

Modes: rtn4/rtn3 (the reference quantizer per group, no calibration), gptq4/gptq3 and
gptq4-act/gptq3-act (true-sequential [k,v,q], [o], [up,gate], [down], each layer fed by the
previous quantized layer, as llama.py's llama_sequential), awq4 (llm-awq's run_awq loop:
auto_scale_block, apply_scale, auto_clip_block, apply_clip on the full-precision layer
outputs, then pseudo-quantization of every linear). All: group size 128, asymmetric
(zero points), percdamp 0.01, fp32 compute with TF32 off.

--dump-layer0 FILE writes layer 0's q/k/v/o_proj codes, scales and zeros of the first
gptq4 run (no act-order) as safetensors, for quantfleet's regression test.
"""
import argparse
import contextlib
import io
import copy
import json
import math
import os
import sys
import time
import types

import torch
import torch.nn as nn

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

SEQUENTIAL = [
    ["self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj"],
    ["self_attn.o_proj"],
    ["mlp.up_proj", "mlp.gate_proj"],
    ["mlp.down_proj"],
]


def load_stream(tok, path):
    text = open(path, encoding="utf-8").read()
    docs = [d.strip() for d in text.split("\n\f\n")]
    ids = []
    for d in docs:
        if d:
            ids.append(tok.bos_token_id)
            ids.extend(tok.encode(d, add_special_tokens=False))
    return ids


def import_reference(gptq_src, awq_src):
    if not torch.cuda.is_available():
        # The reference code calls CUDA helpers unconditionally; on a CPU they are no-ops.
        torch.cuda.synchronize = torch.cuda.empty_cache = lambda *a, **k: None
        nn.Module.cuda = lambda self, *a, **k: self
        torch.Tensor.cuda = lambda self, *a, **k: self
    sys.path.insert(0, gptq_src)
    import gptq as gptq_mod  # IST-DASLab gptq.py
    import quant as quant_mod  # IST-DASLab quant.py

    # llm-awq: import its quantize modules without the package __init__ files (they load
    # CUDA extensions that are not built here) and without its CUDA inference kernels.
    sys.modules.setdefault("awq_inference_engine", types.ModuleType("awq_inference_engine"))
    try:
        import tqdm  # noqa: F401  (only its progress bars are used)
    except ImportError:
        sys.modules["tqdm"] = types.ModuleType("tqdm")
        sys.modules["tqdm"].tqdm = lambda it=None, **_: it
    for name in ("awq", "awq.quantize", "awq.utils"):
        m = types.ModuleType(name)
        m.__path__ = [os.path.join(awq_src, *name.split("."))]
        sys.modules[name] = m
    import transformers.models.bloom.modeling_bloom as bloom

    for missing in ("BloomGelu", "BloomBlock"):  # absent in newer transformers; unused for Llama
        if not hasattr(bloom, missing):
            setattr(bloom, missing, type(missing, (nn.Module,), {}))
    from awq.quantize import auto_clip, auto_scale, quantizer

    return gptq_mod, quant_mod, auto_scale, auto_clip, quantizer


def layer_kwargs(model, dev, seqlen):
    """The keyword arguments the model passes to its decoder layers for one sequence."""
    captured = {}

    class Caught(Exception):
        pass

    def hook(_mod, args, kwargs):
        captured.update(kwargs)
        raise Caught

    h = model.model.layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model(torch.zeros((1, seqlen), dtype=torch.long, device=dev))
    except Caught:
        pass
    h.remove()
    captured.pop("use_cache", None)
    captured.pop("past_key_values", None)
    captured.pop("past_key_value", None)
    return captured


def run_layer(layer, x, kw):
    out = layer(x, **kw)
    return out[0] if isinstance(out, tuple) else out


def linears(layer):
    return {n: m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}


@torch.no_grad()
def gptq_layer(layer, inps, outs, kw, G, Q, bits, act_order, solve=None):
    """llama.py's llama_sequential for one layer: each group of SEQUENTIAL quantized on its input
    from the layer with the earlier groups already quantized; outs gets the quantized layer's
    outputs. solve(name, gptq) runs one linear's fasterquant (default: as llama.py does)."""
    full = linears(layer)
    n = inps.shape[0]
    for names in SEQUENTIAL:
        g = {}
        for name in names:
            g[name] = G.GPTQ(full[name])
            g[name].quantizer = Q.Quantizer()
            g[name].quantizer.configure(bits, perchannel=True, sym=False, mse=False)

        def add_batch(name):
            return lambda _m, inp, out: g[name].add_batch(inp[0].data, out.data)

        hs = [full[name].register_forward_hook(add_batch(name)) for name in names]
        for j in range(n):
            outs[j] = run_layer(layer, inps[j : j + 1], kw)[0]
        for h in hs:
            h.remove()
        for name in names:
            if solve:
                solve(name, g[name])
            else:
                g[name].fasterquant(percdamp=0.01, groupsize=128, actorder=act_order, static_groups=False)
            g[name].free()
        del g
    for j in range(n):
        outs[j] = run_layer(layer, inps[j : j + 1], kw)[0]


@torch.no_grad()
def quantize_gptq(model, samples, kw, bits, act_order, G, Q, dump=None):
    inps = model.model.embed_tokens(samples)
    outs = torch.zeros_like(inps)
    for li, layer in enumerate(model.model.layers):
        def solve(name, gq):
            short = name.split(".")[-1]
            rec = dump is not None and (dump.get("all") or li == 0 and short in ("q_proj", "k_proj", "v_proj", "o_proj"))
            if rec and not act_order:  # act-order codes come in processing order: record the loss only
                record_start(G, gq.quantizer)
            log = io.StringIO()
            with contextlib.redirect_stdout(log):
                gq.fasterquant(percdamp=0.01, groupsize=128, actorder=act_order, static_groups=False)
            if rec:
                key = f"model.layers.{li}.{name}" if dump.get("all") else short
                dump[key] = {} if act_order else record_end(G)
                dump[key]["loss"] = torch.tensor([float(l.split()[1]) for l in log.getvalue().splitlines() if l.startswith("error")])

        gptq_layer(layer, inps, outs, kw, G, Q, bits, act_order, solve)
        inps, outs = outs, inps


_rec = None


def record_start(G, quantizer):
    """Records the codes and group grids of one fasterquant call (no act-order)."""
    global _rec
    _rec = {"codes": [], "scales": [], "zeros": []}
    orig_find = quantizer.find_params

    def find_params(x, weight=False):
        orig_find(x, weight=weight)
        if x.shape[1] <= 128:  # a group, not the initial whole-matrix grid
            _rec["scales"].append(quantizer.scale.flatten().clone().cpu())
            _rec["zeros"].append(quantizer.zero.flatten().clone().cpu())

    quantizer.find_params = find_params
    if not hasattr(G, "_orig_quantize"):
        G._orig_quantize = G.quantize

        def quantize(x, scale, zero, maxq):
            if _rec is not None:
                q = torch.clamp(torch.round(x / scale) + zero, 0, maxq)
                _rec["codes"].append(q.flatten().to(torch.uint8).cpu())
            return G._orig_quantize(x, scale, zero, maxq)

        G.quantize = quantize


def record_end(G):
    global _rec
    r, _rec = _rec, None
    return {
        "codes": torch.stack(r["codes"], dim=1).contiguous(),  # rows × cols
        "scales": torch.stack(r["scales"]).float().contiguous(),  # groups × rows
        "zeros": torch.stack(r["zeros"]).to(torch.uint8).contiguous(),
    }


@torch.no_grad()
def quantize_rtn(model, bits, Q):
    for layer in model.model.layers:
        for lin in linears(layer).values():
            W = lin.weight.data.float()
            out = torch.empty_like(W)
            for c in range(0, W.shape[1], 128):
                q = Q.Quantizer()
                q.configure(bits, perchannel=True, sym=False, mse=False)
                q.find_params(W[:, c : c + 128], weight=True)
                out[:, c : c + 128] = Q.quantize(W[:, c : c + 128], q.scale, q.zero, q.maxq)
            lin.weight.data = out


# llm-awq's quantization config: 4-bit asymmetric groups of 128 (the bits are passed apart).
AWQ_QCONFIG = {"zero_point": True, "q_group_size": 128}


@torch.no_grad()
def awq_search_layer(layer, inps, kw, bits, auto_scale, auto_clip, dev):
    """llm-awq's run_awq for one layer: its linears' inputs captured on inps, the scales searched
    and applied, then the clipping; returns the layer's full-precision outputs on inps (the next
    layer's inputs, as run_awq propagates them). The weights are left unquantized."""
    named = linears(layer)
    feats = {name: [] for name in named}
    hs = [m.register_forward_hook(lambda _m, x, _y, name=name: feats[name].append(x[0].detach()))
          for name, m in named.items()]
    out = run_layer(layer, inps, kw)
    for h in hs:
        h.remove()
    feats = {k: torch.cat(v, dim=0) for k, v in feats.items()}
    scales = auto_scale.auto_scale_block(layer, dict(kw), w_bit=bits, q_config=AWQ_QCONFIG, input_feat=feats)
    auto_scale.apply_scale(layer, scales, input_feat_dict=feats)
    layer.to(dev)
    clips = auto_clip.auto_clip_block(layer, w_bit=bits, q_config=AWQ_QCONFIG, input_feat=feats)
    auto_clip.apply_clip(layer, clips)
    layer.to(dev)
    return out


@torch.no_grad()
def quantize_awq(model, samples, kw, bits, auto_scale, auto_clip, quantizer, dev):
    inps = model.model.embed_tokens(samples)
    for layer in model.model.layers:
        inps = awq_search_layer(layer, inps, kw, bits, auto_scale, auto_clip, dev)
    for layer in model.model.layers:
        for lin in linears(layer).values():
            lin.weight.data = quantizer.pseudo_quantize_tensor(lin.weight.data, n_bit=bits, **AWQ_QCONFIG)


@torch.no_grad()
def evaluate(model, stream, ctx, windows, dev, batch=50):
    total, count = 0.0, 0
    for lo in range(0, windows, batch):
        w = torch.stack([stream[i * ctx : (i + 1) * ctx + 1] for i in range(lo, min(windows, lo + batch))]).to(dev)
        logits = model(w[:, :-1]).logits.float()
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1), reduction="sum")
        total += nll.item()
        count += w[:, 1:].numel()
    return math.exp(total / count)


# --- A minimal Llama in plain PyTorch, for machines without transformers (e.g. Debian's
# python3-torch on a CPU). Its classes carry transformers' names so that llm-awq's isinstance
# checks take the Llama branch; it computes what LlamaForCausalLM computes (default RoPE).


class LlamaRMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.variance_epsilon = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(dtype)


def _rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class LlamaAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.h, self.kvh, self.d = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        hid, bias = c["hidden_size"], c.get("attention_bias", False)
        self.q_proj = nn.Linear(hid, self.h * self.d, bias=bias)
        self.k_proj = nn.Linear(hid, self.kvh * self.d, bias=bias)
        self.v_proj = nn.Linear(hid, self.kvh * self.d, bias=bias)
        self.o_proj = nn.Linear(self.h * self.d, hid, bias=bias)

    def forward(self, x, position_embeddings=None, attention_mask=None, **_):
        b, s, _h = x.shape
        q = self.q_proj(x).view(b, s, self.h, self.d).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.kvh, self.d).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.kvh, self.d).transpose(1, 2)
        cos, sin = (t.unsqueeze(1) for t in position_embeddings)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        rep = self.h // self.kvh
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        w = torch.matmul(q, k.transpose(2, 3)) * self.d**-0.5 + attention_mask[:, :, :, : k.shape[-2]]
        w = torch.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        o = torch.matmul(w, v).transpose(1, 2).reshape(b, s, -1)
        return self.o_proj(o), None


class LlamaMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        hid, ffn, bias = c["hidden_size"], c["intermediate_size"], c.get("mlp_bias", False)
        self.gate_proj = nn.Linear(hid, ffn, bias=bias)
        self.up_proj = nn.Linear(hid, ffn, bias=bias)
        self.down_proj = nn.Linear(ffn, hid, bias=bias)
        self.act_fn = nn.SiLU()

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn, self.mlp = LlamaAttention(c), LlamaMLP(c)
        self.input_layernorm = LlamaRMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.post_attention_layernorm = LlamaRMSNorm(c["hidden_size"], c["rms_norm_eps"])

    def forward(self, x, attention_mask=None, position_embeddings=None, **_):
        a, _w = self.self_attn(self.input_layernorm(x), position_embeddings=position_embeddings, attention_mask=attention_mask)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x))


class _Inner(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(LlamaDecoderLayer(c) for _ in range(c["num_hidden_layers"]))
        self.norm = LlamaRMSNorm(c["hidden_size"], c["rms_norm_eps"])


class MinimalLlama(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = _Inner(c)
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)

    def kwargs(self, seqlen):
        d = self.c["head_dim"]
        theta = (self.c.get("rope_parameters") or {}).get("rope_theta", self.c.get("rope_theta", 10000.0))
        dev = self.lm_head.weight.device
        inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.int64, device=dev).float() / d))
        f = torch.arange(seqlen, device=dev).float()[:, None] * inv[None, :]
        emb = torch.cat((f, f), dim=-1)[None]
        mask = torch.full((seqlen, seqlen), torch.finfo(torch.float32).min, device=dev).triu(1)[None, None]
        return {"attention_mask": mask, "position_embeddings": (emb.cos(), emb.sin())}

    def forward(self, ids):
        kw = self.kwargs(ids.shape[1])
        x = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            x = layer(x, **kw)
        return types.SimpleNamespace(logits=self.lm_head(self.model.norm(x)))


def load_minimal(model_dir):
    c = json.load(open(os.path.join(model_dir, "config.json")))
    c.setdefault("head_dim", c["hidden_size"] // c["num_attention_heads"])
    m = MinimalLlama(c)
    raw = open(os.path.join(model_dir, "model.safetensors"), "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    sd = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        lo, hi = t["data_offsets"]
        buf = bytearray(raw[8 + n + lo : 8 + n + hi])
        if t["dtype"] == "BF16":
            v = torch.frombuffer(buf, dtype=torch.int16).to(torch.int32) << 16
            v = v.view(torch.float32)
        elif t["dtype"] == "F16":
            v = torch.frombuffer(buf, dtype=torch.float16).float()
        else:
            v = torch.frombuffer(buf, dtype=torch.float32).clone()
        sd[name] = v.reshape(t["shape"])
    if "lm_head.weight" not in sd:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    m.load_state_dict(sd)
    return m.eval()


def install_transformers_stub():
    """Registers the few transformers names the reference code imports, mapped to the classes above."""
    tf = types.ModuleType("transformers")
    tf.Conv1D = type("Conv1D", (nn.Module,), {})
    mods = {
        "transformers.models.llama.modeling_llama": {"LlamaDecoderLayer": LlamaDecoderLayer, "LlamaRMSNorm": LlamaRMSNorm, "LlamaForCausalLM": MinimalLlama},
        "transformers.models.qwen2.modeling_qwen2": {"Qwen2RMSNorm": type("Qwen2RMSNorm", (nn.Module,), {}), "Qwen2DecoderLayer": type("Qwen2DecoderLayer", (nn.Module,), {}), "Qwen2ForCausalLM": type("Qwen2ForCausalLM", (nn.Module,), {})},
        "transformers.models.bloom.modeling_bloom": {n: type(n, (nn.Module,), {}) for n in ("BloomBlock", "BloomGelu", "BloomForCausalLM")},
        "transformers.models.opt.modeling_opt": {n: type(n, (nn.Module,), {}) for n in ("OPTDecoderLayer", "OPTForCausalLM")},
        "transformers.activations": {"GELUActivation": type("GELUActivation", (nn.Module,), {})},
    }
    sys.modules["transformers"] = tf
    for name in ("transformers.models", "transformers.models.llama", "transformers.models.qwen2", "transformers.models.bloom", "transformers.models.opt"):
        sys.modules[name] = types.ModuleType(name)
    for name, attrs in mods.items():
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        sys.modules[name] = m


class SentencePieceTokenizer:
    def __init__(self, model_dir):
        import sentencepiece

        self.sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(model_dir, "tokenizer.model"))
        self.bos_token_id = self.sp.bos_id()

    def encode(self, text, add_special_tokens=False):
        return self.sp.encode(text)


def save_safetensors(tensors, path):
    """Writes uint8/float32 CPU tensors as a safetensors file (no dependency on the package)."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        b = t.numpy().tobytes()
        header[name] = {"dtype": {torch.uint8: "U8", torch.float32: "F32"}[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--calib", required=True)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--gptq-src", required=True)
    ap.add_argument("--awq-src", required=True)
    ap.add_argument("--modes", default="rtn4,gptq4,gptq4-act,gptq3,gptq3-act,awq4")
    ap.add_argument("--draws", default="0,1,2,3,4")
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--windows", type=int, default=400)
    ap.add_argument("--out", required=True, help="JSON Lines: one result per mode and draw")
    ap.add_argument("--dump-layer0", help="safetensors file for layer 0 of the first gptq4 run")
    ap.add_argument("--dump-all", help="safetensors file with every linear's codes, scales, zeros and GPTQ loss of the first GPTQ run "
                    "(act-order modes: the loss only), to find where two implementations part")
    ap.add_argument("--minimal", action="store_true",
                    help="use the plain-PyTorch Llama and SentencePiece instead of transformers (CPU machines without it)")
    a = ap.parse_args()

    if a.minimal:
        install_transformers_stub()
    G, Q, auto_scale, auto_clip, quantizer = import_reference(a.gptq_src, a.awq_src)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if a.minimal:
        tok, base = SentencePieceTokenizer(a.model), load_minimal(a.model)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(a.model)
        base = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation="eager").eval()
        base.config.use_cache = False
    calib = torch.tensor(load_stream(tok, a.calib), dtype=torch.long)
    stream = torch.tensor(load_stream(tok, a.eval), dtype=torch.long)
    print(f"device {dev} ({torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu'}), "
          f"calib {len(calib)} tokens, eval {len(stream)} tokens", flush=True)

    with open(a.out, "a") as out:
        for mode in a.modes.split(","):
            for k in (int(d) for d in a.draws.split(",")):
                if mode.startswith("rtn") and k > 0:
                    continue  # no calibration: one run is every draw
                first = k * a.samples
                t0 = time.time()
                model = copy.deepcopy(base).to(dev)
                kw = model.kwargs(a.seqlen) if a.minimal else layer_kwargs(model, dev, a.seqlen)
                samples = torch.stack([calib[i * a.seqlen : (i + 1) * a.seqlen] for i in range(first, first + a.samples)]).to(dev)
                bits = int("".join(c for c in mode.split("-")[0] if c.isdigit()))  # "gptq3-act" -> 3
                dump = None
                if mode == "gptq4" and a.dump_layer0 and k == 0:
                    dump = {}
                if mode.startswith("gptq") and a.dump_all and k == int(a.draws.split(",")[0]):
                    dump = {"all": True}
                if mode.startswith("rtn"):
                    quantize_rtn(model, bits, Q)
                elif mode.startswith("gptq"):
                    quantize_gptq(model, samples, kw, bits, mode.endswith("-act"), G, Q, dump)
                elif mode.startswith("awq"):
                    quantize_awq(model, samples, kw, bits, auto_scale, auto_clip, quantizer, dev)
                else:
                    raise SystemExit(f"unknown mode {mode}")
                tq = time.time() - t0
                ppl = evaluate(model, stream, a.ctx, a.windows, dev)
                rec = {"impl": "reference", "mode": mode, "draw": k, "first_sample": first, "samples": a.samples,
                       "seqlen": a.seqlen, "perplexity": ppl, "quantize_s": round(tq, 2), "device": str(dev)}
                print(json.dumps(rec), flush=True)
                out.write(json.dumps(rec) + "\n")
                out.flush()
                if dump:
                    if dump.pop("all", False):
                        path, a.dump_all = a.dump_all, None  # the first GPTQ run only
                    else:
                        path = a.dump_layer0
                    save_safetensors({f"{name}.{field}": v for name, d in dump.items() for field, v in d.items()}, path)
                del model
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
