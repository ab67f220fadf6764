#!/usr/bin/env python3
"""Compares a quantfleet GPTQ checkpoint with a reference run's --dump-all file
(scripts/reference/quality_ref.py), linear by linear in quantization order: the share of codes
that differ, the largest scale difference (relative to the largest scale) and the GPTQ loss of
each side, so that the first linear where two implementations part shows. Dumps of act-order
runs hold the loss only; then only losses are compared.

usage: compare_dump.py REF_DUMP.safetensors CHECKPOINT_DIR QUANTIZE_RESULT.json

QUANTIZE_RESULT.json is the last line of `quantfleet quantize --json` (its "result" holds the
per-linear losses in quantization_metadata.linears). Codes are compared for 4-bit checkpoints
(eight codes per int32 of qweight) only. Needs numpy only.
"""
import json
import math
import struct
import sys

import numpy as np

ORDER = ["self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj", "self_attn.o_proj",
         "mlp.up_proj", "mlp.gate_proj", "mlp.down_proj"]
DTYPES = {"U8": np.uint8, "F32": np.float32, "I32": np.int32, "F16": np.float16, "BF16": np.uint16}


def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    return {k: np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]], dtype=DTYPES[v["dtype"]]).reshape(v["shape"])
            for k, v in header.items() if k != "__metadata__"}


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    ref, ours = load(sys.argv[1]), load(sys.argv[2] + "/model.safetensors")
    line = [l for l in open(sys.argv[3]) if l.strip()][-1]
    result = json.loads(line)
    result = result.get("result", result)
    losses = {l["name"]: l["loss"] for l in result["quantization_metadata"].get("linears", [])}
    names = {k.rsplit(".", 1)[0] for k in ref}
    names = sorted(names, key=lambda s: (int(s.split(".")[2]), ORDER.index(s.split(".", 3)[3])))
    total_ref = total_ours = log_ratio = 0.0
    for name in names:
        detail = ""
        codes = ref.get(name + ".codes")
        if codes is not None and ours[name + ".qweight"].shape[0] * 8 == codes.shape[1]:
            rows, cols = codes.shape
            packed = ours[name + ".qweight"].view(np.uint32)  # cols/8 × rows
            got = np.zeros((cols, rows), np.uint8)
            for j in range(8):
                got[j::8] = (packed >> (4 * j)) & 15
            got = got.T
            scales, ref_scales = ours[name + ".scales"].astype(np.float32), ref[name + ".scales"]
            detail = (f"codes differ {100 * (got != codes).mean():6.2f} %  "
                      f"scale diff {np.abs(scales - ref_scales).max() / np.abs(ref_scales).max():.2e}  ")
        rl, ol = float(ref[name + ".loss"].sum()), losses.get(name, float("nan"))
        total_ref, total_ours, log_ratio = total_ref + rl, total_ours + ol, log_ratio + math.log(ol / rl)
        print(f"{name:40s} {detail}loss ref {rl:10.3f} ours {ol:10.3f} ({ol / rl:.4f})")
    print(f"total loss ref {total_ref:.1f} ours {total_ours:.1f} ({total_ours / total_ref:.5f}); "
          f"geometric mean of the per-linear ratios {math.exp(log_ratio / len(names)):.5f} over {len(names)} linears")


if __name__ == "__main__":
    main()
