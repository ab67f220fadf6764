#!/usr/bin/env python3
"""Times the reference GPTQ (IST-DASLab gptq.py/quant.py) and AWQ (mit-han-lab llm-awq) per
decoder layer on a Llama checkpoint, for scripts/bench-gpu.sh.

Each timed layer is built directly as a transformers LlamaDecoderLayer (SDPA attention, the
checkpoint's dtype, bf16 for bench-gpu.sh's synthetic model) from the checkpoint's tensors, on
the GPU, with the same calibration tokens quantfleet uses (samples 0..n-1 of seqlen tokens of
the calibration text, documents encoded as [BOS]+ids; random ids when no tokenizer loads,
labeled so). Layer l's inputs are the embeddings run through the full-precision layers 0..l-1
(not timed).

  * GPTQ, as llama.py's llama_sequential: per true-sequential subset ([k,v,q], [o], [up,gate],
    [down]) forward hooks with GPTQ.add_batch, the layer run sample by sample, fasterquant
    (percdamp 0.01, group size 128, act-order, asymmetric 4-bit), then the layer's outputs on
    the quantized weights. TF32 off, as the reference sets it.
  * AWQ, as llm-awq's run_awq: the layer run on all samples at once with input hooks,
    auto_scale_block + apply_scale, auto_clip_block + apply_clip, then pseudo-quantization of
    the layer's linears (4-bit, group 128, zero point).

Prints one JSON object per timed layer and method, and writes them all to --out:
{"impl": "reference", "method": "gptq"|"awq", "layer": l, "seconds": s, "peak_gpu_mib": m,
"peak_host_mib": h, "tokens": "calib"|"random"} (peak_gpu_mib: torch.cuda.max_memory_allocated
since the method's layer started; peak_host_mib: this process's maximum RSS so far), or
{"method": ..., "error": "..."} when a method fails (e.g. out of memory).
"""
import argparse
import json
import os
import resource
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quality_ref as qr  # noqa: E402  (import_reference, gptq_layer, awq_search_layer, run_layer, linears, load_stream)

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}


class Checkpoint:
    """Reads tensors of a (sharded) safetensors checkpoint by name."""

    def __init__(self, model_dir):
        self.dir = model_dir
        index = os.path.join(model_dir, "model.safetensors.index.json")
        if os.path.exists(index):
            self.where = json.load(open(index))["weight_map"]
        else:
            self.where = None
        self.headers = {}

    def _header(self, fname):
        if fname not in self.headers:
            with open(os.path.join(self.dir, fname), "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                self.headers[fname] = (8 + n, json.loads(f.read(n)))
        return self.headers[fname]

    def names(self):
        if self.where is not None:
            return list(self.where)
        return [k for k in self._header("model.safetensors")[1] if k != "__metadata__"]

    def tensor(self, name):
        fname = self.where[name] if self.where is not None else "model.safetensors"
        base, header = self._header(fname)
        t = header[name]
        lo, hi = t["data_offsets"]
        with open(os.path.join(self.dir, fname), "rb") as f:
            f.seek(base + lo)
            buf = bytearray(f.read(hi - lo))
        return torch.frombuffer(buf, dtype=DTYPES[t["dtype"]]).reshape(t["shape"])


def build_layer(ck, cfg, i, dev, dtype):
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    layer = LlamaDecoderLayer(cfg, layer_idx=i)
    prefix = f"model.layers.{i}."
    sd = {n[len(prefix):]: ck.tensor(n) for n in ck.names() if n.startswith(prefix)}
    layer.load_state_dict(sd)
    return layer.to(dev, dtype).eval()


def calibration_ids(model_dir, calib, n, seqlen):
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        stream = qr.load_stream(tok, calib)
        if len(stream) >= n * seqlen:
            return torch.tensor(stream[: n * seqlen], dtype=torch.long).view(n, seqlen), "calib"
        print(f"bench_ref: the calibration text has {len(stream)} tokens, {n * seqlen} needed: random ids", file=sys.stderr)
    except Exception as e:  # noqa: BLE001
        print(f"bench_ref: no tokenizer ({e}): random ids", file=sys.stderr)
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 8192, (n, seqlen), generator=g), "random"


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_gpu_mib():
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0


def peak_host_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.no_grad()
def gptq_layer(layer, inps, kw, G, Q, bits, act_order):
    """llama.py's llama_sequential for one layer; returns the quantized layer's outputs."""
    outs = torch.empty_like(inps)
    qr.gptq_layer(layer, inps, outs, kw, G, Q, bits, act_order)
    return outs


@torch.no_grad()
def awq_layer(layer, inps, kw, bits, auto_scale, auto_clip, quantizer, dev):
    """llm-awq's run_awq for one layer (search, apply, clip, then pseudo-quantization)."""
    out = qr.awq_search_layer(layer, inps, kw, bits, auto_scale, auto_clip, dev)
    for lin in qr.linears(layer).values():
        lin.weight.data = quantizer.pseudo_quantize_tensor(lin.weight.data, n_bit=bits, **qr.AWQ_QCONFIG)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--calib", required=True)
    ap.add_argument("--gptq-src", required=True)
    ap.add_argument("--awq-src", required=True)
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=2, help="layers timed per method (0..layers-1)")
    ap.add_argument("--methods", default="gptq,awq")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_ref: no CUDA device: the references are timed on the GPU only", file=sys.stderr)
        sys.exit(2)
    dev = torch.device("cuda")
    G, Q, auto_scale, auto_clip, quantizer = qr.import_reference(a.gptq_src, a.awq_src)
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    cfg = LlamaConfig.from_pretrained(a.model)
    cfg._attn_implementation = "sdpa"  # the fused kernels llama.py/run_awq get from transformers today
    ck = Checkpoint(a.model)
    dtype = ck.tensor("model.layers.0.input_layernorm.weight").dtype
    ids, source = calibration_ids(a.model, a.calib, a.samples, a.seqlen)
    embed = ck.tensor("model.embed_tokens.weight").to(dev, dtype)
    x0 = embed[ids.to(dev)]
    del embed
    rotary = LlamaRotaryEmbedding(config=cfg).to(dev)
    pos = torch.arange(a.seqlen, device=dev)[None]
    cos, sin = rotary(x0[:1], pos)
    kw = {"position_embeddings": (cos, sin), "attention_mask": None, "position_ids": pos}
    results = []

    def emit(r):
        print(json.dumps(r), flush=True)
        results.append(r)

    for method in a.methods.split(","):
        inps = x0.clone()
        try:
            for i in range(a.layers):
                layer = build_layer(ck, cfg, i, dev, dtype)
                full_out = None
                if i + 1 < a.layers:
                    with torch.no_grad():  # the next layer's inputs: the full-precision layer's outputs
                        full_out = torch.cat([qr.run_layer(layer, inps[j : j + 8], kw) for j in range(0, inps.shape[0], 8)])
                sync()
                torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                if method == "gptq":
                    gptq_layer(layer, inps, kw, G, Q, a.bits, act_order=True)
                else:
                    awq_layer(layer, inps, kw, a.bits, auto_scale, auto_clip, quantizer, dev)
                sync()
                emit({"impl": "reference", "method": method, "layer": i, "seconds": round(time.perf_counter() - t0, 3),
                      "peak_gpu_mib": round(peak_gpu_mib()), "peak_host_mib": round(peak_host_mib()), "tokens": source,
                      "samples": a.samples, "seqlen": a.seqlen, "gpu": torch.cuda.get_device_name()})
                del layer
                inps = full_out
                torch.cuda.empty_cache()
        except Exception as e:  # noqa: BLE001  (an OOM of one method must not hide the other's numbers)
            traceback.print_exc()
            emit({"impl": "reference", "method": method, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"})
        del inps
        torch.cuda.empty_cache()
    with open(a.out, "w") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
