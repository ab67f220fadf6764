#!/usr/bin/env python3
"""Reference fixtures for issue 13 (Gemma 2/3, Phi-3, Mixtral, Qwen2/3-MoE), made on the GPU machine.

Run from the repository root:

    python3 scripts/reference/arch_fixtures.py --llama-cpp LLAMA_CPP --llama-quantize BIN --shared .devcarry/shared --out "$OUT"

It takes a llama.cpp checkout (convert_hf_to_gguf.py, gguf-py) and a llama-quantize built from it by
hand, outside this repository, the default way (no -march, no FMA: the reference the quantizers
match); this repository neither holds nor builds llama.cpp. It (1) checks the binary exists, (2) writes the synthetic checkpoints with the synth test binary
(.devcarry/synth.test, else `go test`), (3) converts each with the unmodified
convert_hf_to_gguf.py (--outtype auto) and quantizes that file with llama-quantize at every level
the Go tests compare, dumping each output with shared/tools/gguf_dump.py plus the GGUF value type of
every key, (4) computes transformers' per-window NLL of each text model on token windows it writes
out (forward-pass fixtures), (5) tokenizes shared/data/eval.txt with the real Llama 3, Qwen 3 and
Gemma 3 tokenizers and converts the Llama 3 one with --vocab-only (tokenizer fixtures).

Outputs, to copy into the repository:
  OUT/converter/*.json        -> libs/convert/testdata/converter/ (weight_digests.json: compare, do not copy)
  OUT/forward/*.json.gz       -> libs/transformer/testdata/arch/
  OUT/tokenizer/*.json.gz     -> libs/tokenizer/testdata/real/
"""
import argparse, gzip, hashlib, json, os, shutil, struct, subprocess, sys, time
from pathlib import Path

MODELS = ["gemma-2-synth-it", "gemma-3-synth-it", "gemma-3-synth-mm", "Phi-3-synth-128k-instruct",
          "Mixtral-synth-8x", "Qwen3-MoE-synth", "Qwen1.5-MoE-synth"]
LEVELS = ["Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_1", "Q4_K_S", "Q4_K_M",
          "Q5_0", "Q5_1", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0"]  # the seed's 14 levels
# Text models whose forward pass transformers runs (the multimodal one is converted only).
FORWARD = [m for m in MODELS if m != "gemma-3-synth-mm"]
CTX, WINDOWS = 64, 8


def run(cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def write_models(repo: Path, shared: Path, dest: Path):
    env = dict(os.environ, QUANTFLEET_SYNTH_OUT=str(dest.resolve()),
               QUANTFLEET_SYNTH_TINY=str((shared / "models" / "tiny-llama").resolve()))
    pkg = repo / "libs" / "synth"
    binary = repo / ".devcarry" / "synth.test"
    # The prebuilt test binary first: the device machine may have no module cache or network.
    if binary.exists():
        run([binary.resolve(), "-test.run", "^TestWrite$"], cwd=pkg, env=env)
    else:
        run(["go", "test", "-count=1", "-run", "^TestWrite$", "."], cwd=pkg, env=env)


# GGUF value types of every key (numbers as in gguf.h), read with the standard library.
SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def kv_types(path: Path) -> dict:
    out = {}
    with open(path, "rb") as f:
        def u(fmt):
            n = struct.calcsize(fmt)
            return struct.unpack(fmt, f.read(n))[0]
        def skip(t):
            if t in SCALAR:
                f.read(SCALAR[t])
            elif t == 8:
                f.read(u("<Q"))
            else:
                raise ValueError(f"type {t}")
        assert f.read(4) == b"GGUF"
        u("<I"); u("<Q"); nkv = u("<Q")
        for _ in range(nkv):
            key = f.read(u("<Q")).decode()
            t = u("<i")
            if t == 9:
                et = u("<i"); n = u("<Q")
                for _ in range(n):
                    skip(et)
                out[key] = [9, et]
            else:
                skip(t)
                out[key] = [t]
    return out


def dump(gguf_dump: Path, gguf: Path, stem: Path):
    with open(f"{stem}.json", "w") as f:
        run([sys.executable, gguf_dump, gguf], stdout=f)
    with open(f"{stem}.types.json", "w") as f:
        json.dump(kv_types(gguf), f, indent=1)


def documents(shared: Path):
    text = (shared / "data" / "eval.txt").read_text(encoding="utf-8")
    return [d.strip() for d in text.split("\n\f\n") if d.strip()]


def forward(models: Path, docs, out: Path, failed: list, names):
    for name in (n for n in FORWARD if n in names):
        try:
            forward_one(models / name, name, docs, out)
        except Exception as e:  # noqa: BLE001
            failed.append(f"forward {name}: {e}")


def forward_one(d: Path, name: str, docs, out: Path):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(d)
    cfg = json.loads((d / "config.json").read_text())
    # Phi-3's pad_token_id (32000, Phi3Config's default when config.json has none) lies outside the
    # synthetic vocabulary; padding_idx only affects training, so leave it out rather than change
    # the checkpoint the converter fixtures use.
    config = AutoConfig.from_pretrained(d)
    if config.pad_token_id is not None and config.pad_token_id >= config.vocab_size:
        config.pad_token_id = None
    model = AutoModelForCausalLM.from_pretrained(d, config=config, dtype=torch.float32, attn_implementation="eager").eval()
    bos = cfg.get("bos_token_id")
    ids = []
    for doc in docs:
        if bos is not None:
            ids.append(bos)
        ids += tok.encode(doc, add_special_tokens=False)
        if len(ids) > (CTX + 1) * WINDOWS:
            break
    windows, nll = [], []
    with torch.no_grad():
        for w in range(WINDOWS):
            x = ids[w * CTX:(w + 1) * CTX + 1]
            logits = model(torch.tensor([x[:-1]])).logits[0].float()
            lp = torch.log_softmax(logits, dim=-1)
            tgt = torch.tensor(x[1:])
            per = -lp[torch.arange(len(tgt)), tgt]
            windows.append(x)
            nll.append({"mean": per.mean().item(), "per_token": per.tolist()})
    rec = {"model": name, "ctx": CTX, "windows": windows, "nll": nll,
           "torch": torch.__version__, "transformers": __import__("transformers").__version__,
           "note": "float32 weights (bf16 checkpoint widened), eager attention; window i is ids[i*ctx:(i+1)*ctx+1]"}
    with gzip.open(out / f"{name}.nll.json.gz", "wt") as f:
        json.dump(rec, f)


def tokenizer_ids(shared: Path, docs, out: Path, llama_cpp: Path, gguf_dump: Path, work: Path):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer
    for fam in ["llama3", "qwen3", "gemma3"]:
        d = work / f"tok-{fam}"
        d.mkdir(parents=True, exist_ok=True)
        with gzip.open(shared / "tokenizers" / fam / "tokenizer.json.gz", "rb") as f:
            (d / "tokenizer.json").write_bytes(f.read())
        shutil.copy(shared / "tokenizers" / fam / "tokenizer_config.json", d / "tokenizer_config.json")
        raw = Tokenizer.from_file(str(d / "tokenizer.json"))
        hf = AutoTokenizer.from_pretrained(d)
        rec = {"family": fam, "documents": len(docs),
               "docs_sha256": hashlib.sha256("\n\f\n".join(docs).encode()).hexdigest(),
               "raw_ids": [raw.encode(doc, add_special_tokens=False).ids for doc in docs],
               "hf_ids": [hf.encode(doc, add_special_tokens=False) for doc in docs],
               "hf_class": type(hf).__name__}
        with gzip.open(out / f"{fam}.eval_ids.json.gz", "wt") as f:
            json.dump(rec, f)
        if fam == "llama3":  # GGUF tokenizer metadata through the converter (Qwen 3's: Qwen1.5-MoE-synth)
            n = len(json.loads((d / "tokenizer.json").read_text())["model"]["vocab"]) + 256
            (d / "config.json").write_text(json.dumps({
                "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": n,
                "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
                "bos_token_id": 128000, "eos_token_id": 128009, "rms_norm_eps": 1e-5}))
            g = work / "llama3-vocab.gguf"
            run([sys.executable, llama_cpp / "convert_hf_to_gguf.py", d, "--vocab-only", "--outfile", g])
            dump(gguf_dump, g, out / "llama3.vocab")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", type=Path, required=True, help="llama.cpp checkout (convert_hf_to_gguf.py, gguf-py)")
    ap.add_argument("--llama-quantize", type=Path, required=True, help="llama-quantize built from that checkout, outside this repository")
    ap.add_argument("--shared", type=Path, default=Path(".devcarry/shared"))
    ap.add_argument("--out", type=Path, default=Path(".devcarry/out"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/quantfleet-arch-work"), help="checkpoints, GGUF files (not kept)")
    ap.add_argument("--skip-forward", action="store_true")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of the synthetic models")
    ap.add_argument("--forward-only", action="store_true", help="only the forward-pass fixtures (no converter, no tokenizers)")
    a = ap.parse_args()
    names = a.models.split(",")
    t0 = time.time()
    repo = Path.cwd()
    out = a.out
    work = a.work
    for sub in ["converter", "forward", "tokenizer"]:
        (out / sub).mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str((a.llama_cpp / "gguf-py").resolve()))
    os.environ["PYTHONPATH"] = str((a.llama_cpp / "gguf-py").resolve()) + os.pathsep + os.environ.get("PYTHONPATH", "")
    quantize = a.llama_quantize.resolve()
    if not quantize.exists() and not a.forward_only:
        raise SystemExit(f"llama-quantize not found at {quantize}")
    models = work / "models"
    write_models(repo, a.shared, models)
    digests = {}
    for m in names:
        h = hashlib.sha256()
        for f in sorted((models / m).glob("*.safetensors")):
            h.update(f.read_bytes())
        digests[m] = h.hexdigest()
    (out / "converter" / "weight_digests.json").write_text(json.dumps(digests, indent=1))
    gguf_dump = a.shared / "tools" / "gguf_dump.py"
    failed = []  # one model's failure (a converter refusal, say) must not cost the others' fixtures
    for m in ([] if a.forward_only else names):
        try:
            auto = work / f"{m}.auto.gguf"
            run([sys.executable, a.llama_cpp / "convert_hf_to_gguf.py", models / m, "--outtype", "auto", "--outfile", auto])
            dump(gguf_dump, auto, out / "converter" / f"{m}.auto")
            for lv in LEVELS:
                q = work / f"{m}.{lv}.gguf"
                run([quantize, auto, q, lv, str(os.cpu_count() or 8)])
                dump(gguf_dump, q, out / "converter" / f"{m}.{lv}")
                q.unlink()
        except Exception as e:  # noqa: BLE001
            failed.append(f"convert {m}: {e}")
    docs = documents(a.shared)
    for step, fn in [("tokenizer", lambda: None if a.forward_only else tokenizer_ids(a.shared, docs, out / "tokenizer", a.llama_cpp, gguf_dump, work)),
                     ("forward", lambda: None if a.skip_forward else forward(models, docs, out / "forward", failed, names))]:
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            failed.append(f"{step}: {e}")
    print(f"done in {time.time() - t0:.0f}s; outputs under {out}/converter, {out}/forward, {out}/tokenizer")
    for f in failed:
        print("FAILED:", f)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
