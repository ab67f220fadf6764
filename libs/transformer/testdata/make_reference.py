# Reference outputs for quantfleet.dev/libs/transformer and libs/perplexity, computed with
# PyTorch + transformers (fp32 compute, eager attention, TF32 off) on the GPU machine.
import hashlib
import inspect
import json
import math
import os
import sys
import tarfile
import time
import traceback

T0 = time.time()
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

OUT = os.environ.get("OUT", "/tmp/out")
HERE = os.path.dirname(os.path.abspath(__file__))
os.makedirs(OUT, exist_ok=True)
DEV = "cuda" if torch.cuda.is_available() else "cpu"
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_float32_matmul_precision("highest")
MAJOR = int(transformers.__version__.split(".")[0])
META = {"torch": torch.__version__, "transformers": transformers.__version__, "device": DEV,
        "gpu": torch.cuda.get_device_name(0) if DEV == "cuda" else None}
print(META, flush=True)


def save(name, obj):
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(obj, f, indent=1)


def load(path):
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    except TypeError:
        return AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32, attn_implementation="eager")


def layer_hooks(model, store):
    def mk(i):
        def h(mod, inp, out):
            o = out[0] if isinstance(out, (tuple, list)) else out
            store[i] = o.detach().float().cpu()
        return h
    return [l.register_forward_hook(mk(i)) for i, l in enumerate(model.model.layers)]


def f64(x):
    return [float(v) for v in x]


# ---- A+B: tiny-llama windows, per-window NLL, hidden-state checksums
def part_tiny_llama():
    CTX, N = 512, 400
    tok = AutoTokenizer.from_pretrained(f"{HERE}/tiny-llama")
    with open(f"{HERE}/eval.txt", encoding="utf-8", newline="") as f:
        text = f.read()
    docs = [d.strip() for d in text.split("\n\f\n")]
    docs = [d for d in docs if d]
    ids = []
    for d in docs:
        ids.append(tok.bos_token_id)
        ids.extend(tok.encode(d, add_special_tokens=False))
    need = N * CTX + 1
    res = {"meta": META, "ctx": CTX, "windows": N, "documents": len(docs), "total_tokens": len(ids),
           "bos": tok.bos_token_id,
           "sha256_int32le_first_needed": hashlib.sha256(
               b"".join(int(v).to_bytes(4, "little", signed=True) for v in ids[:need])).hexdigest()}
    print("docs", len(docs), "tokens", len(ids), "need", need, flush=True)
    windows = [ids[i * CTX:(i + 1) * CTX + 1] for i in range(N)]
    res["window_ids_0_3"] = windows[:4]
    model = load(f"{HERE}/tiny-llama").to(DEV).eval()
    W = torch.tensor(windows, dtype=torch.long, device=DEV)
    nll = []
    t = time.time()
    with torch.no_grad():
        for b in range(0, N, 25):
            x = W[b:b + 25]
            logits = model(input_ids=x[:, :-1]).logits.float()
            lp = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                                   reduction="none").view(x.shape[0], -1)
            nll.extend(lp.double().sum(dim=1).tolist())
    res["eval_seconds"] = time.time() - t
    res["window_nll_sum"] = nll
    mean = sum(nll) / (N * CTX)
    res["mean_nll"] = mean
    res["ppl"] = math.exp(mean)
    res["ppl_windows_0_3"] = math.exp(sum(nll[:4]) / (4 * CTX))
    print("ppl", res["ppl"], "ppl(0..3)", res["ppl_windows_0_3"], flush=True)
    store = {}
    hs = layer_hooks(model, store)
    with torch.no_grad():
        emb = model.model.embed_tokens(W[0:1, :-1]).float().cpu()
        logits = model(input_ids=W[0:1, :-1]).logits.float().cpu()
    for h in hs:
        h.remove()
    P = [0, 1, 2, 3, 4, 5, 6, 7, 100, 511]

    def summ(t):
        return {str(p): {"first16": f64(t[0, p, :16]), "sum": float(t[0, p].double().sum()),
                         "sumsq": float((t[0, p].double() ** 2).sum())} for p in P}
    res["embed"] = summ(emb)
    res["layer0"] = summ(store[0])
    res["layer_last"] = summ(store[len(store) - 1])
    res["logits"] = {str(p): {"lse": float(torch.logsumexp(logits[0, p].double(), 0)),
                              "first16": f64(logits[0, p, :16])} for p in [0, 1, 255, 511]}
    save("tinyllama_ref.json", res)


# ---- C: rotary tables
def part_rope():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    cases = [
        ("default", dict(rope_type="default", rope_theta=10000.0), 2048, 600),
        ("linear", dict(rope_type="linear", factor=4.0, rope_theta=10000.0), 2048, 600),
        ("dynamic_short", dict(rope_type="dynamic", factor=2.0, rope_theta=10000.0), 2048, 600),
        ("dynamic_long", dict(rope_type="dynamic", factor=2.0, rope_theta=10000.0), 2048, 3000),
        ("yarn", dict(rope_type="yarn", factor=4.0, rope_theta=10000.0), 4096, 600),
        ("yarn_orig", dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=2048, rope_theta=10000.0), 16384, 600),
        ("yarn_mscale", dict(rope_type="yarn", factor=4.0, mscale=1.0, mscale_all_dim=0.707, beta_fast=16.0, beta_slow=2.0, rope_theta=10000.0), 4096, 600),
        ("yarn_notrunc", dict(rope_type="yarn", factor=4.0, truncate=False, rope_theta=1000000.0), 4096, 600),
        ("yarn_attn", dict(rope_type="yarn", factor=2.0, attention_factor=1.5, rope_theta=10000.0), 4096, 600),
        ("llama3", dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192, rope_theta=500000.0), 131072, 600),
    ]
    out = {"meta": META, "head_dim": 64, "cases": {}}
    for name, params, maxpos, seq in cases:
        try:
            kw = dict(hidden_size=512, num_attention_heads=8, num_key_value_heads=8, head_dim=64, max_position_embeddings=maxpos)
            if MAJOR >= 5:
                cfg = LlamaConfig(rope_parameters=dict(params), **kw)
            else:
                p = dict(params)
                theta = p.pop("rope_theta")
                cfg = LlamaConfig(rope_theta=theta, rope_scaling=p, **kw)
            rot = LlamaRotaryEmbedding(config=cfg)
            x = torch.zeros(1, seq, 64)
            pos = torch.arange(seq)[None]
            with torch.no_grad():
                cos, sin = rot(x, pos)
            P = sorted(set([0, 1, 37, 511, seq - 1]))
            out["cases"][name] = {
                "params": params, "max_position_embeddings": maxpos, "seq": seq,
                "config_rope": getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None),
                "attention_scaling": float(rot.attention_scaling),
                "inv_freq": f64(rot.inv_freq.float()),
                "positions": P,
                "cos": [f64(cos[0, p, :32]) for p in P], "sin": [f64(sin[0, p, :32]) for p in P],
                "cos_upper_equals_lower": bool(torch.equal(cos[0, :, :32], cos[0, :, 32:])),
            }
        except Exception:
            out["cases"][name] = {"error": traceback.format_exc()}
            print(name, traceback.format_exc(), flush=True)
    save("rope_ref.json", out)


# ---- D: tiny random models of each architecture
def part_archs():
    from transformers import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  vocab_size=64, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)

    def rope(**p):
        if MAJOR >= 5:
            return {"rope_parameters": p}
        theta = p.pop("rope_theta")
        return {"rope_theta": theta, "rope_scaling": p if p.get("rope_type") != "default" else None}
    archs = [
        ("llama_bias_tied_llama3", LlamaConfig, dict(attention_bias=True, mlp_bias=True, tie_word_embeddings=True, max_position_embeddings=256,
                                                    **rope(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=16, rope_theta=10000.0)), 40),
        ("llama_dynamic", LlamaConfig, dict(max_position_embeddings=32, **rope(rope_type="dynamic", factor=2.0, rope_theta=10000.0)), 48),
        ("mistral_window_yarn", MistralConfig, dict(sliding_window=16, max_position_embeddings=128,
                                                    **rope(rope_type="yarn", factor=4.0, original_max_position_embeddings=32, rope_theta=10000.0)), 40),
        ("qwen2_tied", Qwen2Config, dict(tie_word_embeddings=True, max_position_embeddings=128, **rope(rope_type="default", rope_theta=1000000.0)), 40),
        ("qwen3_linear", Qwen3Config, dict(head_dim=16, max_position_embeddings=128, **rope(rope_type="linear", factor=2.0, rope_theta=1000000.0)), 40),
    ]
    refs = {"meta": META}
    tarpath = os.path.join(OUT, "archs.tar")
    with tarfile.open(tarpath, "w") as tar:
        for i, (name, C, kw, seq) in enumerate(archs):
            try:
                cfg = C(**common, **kw)
                torch.manual_seed(100 + i)
                try:
                    m = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
                except TypeError:
                    m = AutoModelForCausalLM.from_config(cfg)
                with torch.no_grad():
                    for pn, p in m.named_parameters():
                        if "norm" in pn:
                            p.copy_(1 + 0.2 * torch.randn_like(p))
                        elif pn.endswith("bias"):
                            p.copy_(0.2 * torch.randn_like(p))
                        elif "embed_tokens" in pn:
                            p.copy_(torch.randn_like(p))
                        else:
                            p.copy_(2 * torch.randn_like(p) / math.sqrt(p.shape[1]))
                m = m.to(torch.bfloat16)
                d = os.path.join("/tmp/archs", name)
                m.save_pretrained(d)
                m2 = load(d).to(DEV).eval()
                g = torch.Generator().manual_seed(7 + i)
                ids = torch.randint(0, 64, (2, seq), generator=g)
                store = {}
                hs = layer_hooks(m2, store)
                with torch.no_grad():
                    logits = m2(input_ids=ids.to(DEV)).logits.float().cpu()
                for h in hs:
                    h.remove()
                lp = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 64), ids[:, 1:].reshape(-1), reduction="none").view(2, -1)
                refs[name] = {
                    "config": json.load(open(os.path.join(d, "config.json"))),
                    "files": sorted(os.listdir(d)),
                    "ids": ids.tolist(),
                    "nll": [f64(r) for r in lp],
                    "last_logits": [f64(logits[b, -1]) for b in range(2)],
                    "layer0_seq1": {str(p): f64(store[0][1, p]) for p in [0, 7, seq - 1]},
                    "last_layer_seq0": {str(p): f64(store[len(store) - 1][0, p]) for p in [0, seq - 1]},
                }
                for fn in os.listdir(d):
                    tar.add(os.path.join(d, fn), arcname=f"{name}/{fn}")
                print(name, "ok", flush=True)
            except Exception:
                refs[name] = {"error": traceback.format_exc()}
                print(name, traceback.format_exc(), flush=True)
    save("archs_ref.json", refs)


# ---- E: sources of the functions the Go code mirrors (for reading, not committed)
def part_sources():
    import transformers.modeling_rope_utils as ru
    chunks = []
    for n, obj in vars(ru).items():
        if callable(obj) and (n.startswith("_compute") or "rope_update" in n or n.startswith("standardize")):
            try:
                chunks.append(f"### {n}\n" + inspect.getsource(obj))
            except Exception:
                pass
    for mod in ["llama", "mistral", "qwen2", "qwen3"]:
        try:
            m = __import__(f"transformers.models.{mod}.modeling_{mod}", fromlist=["x"])
            for cls in ["Attention", "RotaryEmbedding", "RMSNorm", "DecoderLayer"]:
                for n, obj in vars(m).items():
                    if n.endswith(cls) and inspect.isclass(obj):
                        chunks.append(f"### {mod}.{n}\n" + inspect.getsource(obj))
            c = __import__(f"transformers.models.{mod}.configuration_{mod}", fromlist=["x"])
            for n, obj in vars(c).items():
                if n.endswith("Config") and inspect.isclass(obj) and obj.__module__ == c.__name__:
                    chunks.append(f"### {mod}.{n}.__init__\n" + inspect.getsource(obj))
        except Exception:
            chunks.append(traceback.format_exc())
    try:
        import transformers.masking_utils as mu
        for n in ["sliding_window_overlay", "sliding_window_causal_mask_function", "causal_mask_function"]:
            if hasattr(mu, n):
                chunks.append(f"### {n}\n" + inspect.getsource(getattr(mu, n)))
    except Exception:
        chunks.append(traceback.format_exc())
    with open(os.path.join(OUT, "sources.txt"), "w") as f:
        f.write("\n\n".join(chunks))


for part in [part_tiny_llama, part_rope, part_archs, part_sources]:
    t = time.time()
    try:
        part()
    except Exception:
        traceback.print_exc()
    print(part.__name__, "%.1fs" % (time.time() - t), flush=True)
print("total %.1fs" % (time.time() - T0), flush=True)
