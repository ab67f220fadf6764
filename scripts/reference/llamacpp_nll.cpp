// Per-token NLL of a fixed id sequence (ids[i] = (i*7919+1) % n_vocab) under llama.cpp on the CPU,
// F32 KV cache, no flash attention: a cross-check of quantfleet's runtime on a converted F32 GGUF.
//   g++ -O2 -std=c++17 -I LLAMA/include -I LLAMA/ggml/include llamacpp_nll.cpp -L BUILD/bin -lllama -lggml -lggml-base -Wl,-rpath,BUILD/bin -o nll
//   PER=1 ./nll model.f32.gguf 64      (mean NLL; PER=1 also prints each token's)
#include "llama.h"
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int n = atoi(argv[2]);
    llama_backend_init();
    auto mp = llama_model_default_params();
    llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "load failed\n"); return 1; }
    int nv = llama_vocab_n_tokens(llama_model_get_vocab(model));
    auto cp = llama_context_default_params();
    cp.n_ctx = 256; cp.n_batch = 256; cp.n_ubatch = 256; cp.n_threads = 2;
    cp.type_k = GGML_TYPE_F32; cp.type_v = GGML_TYPE_F32; cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    llama_context *ctx = llama_init_from_model(model, cp);
    llama_batch b = llama_batch_init(n, 0, 1);
    std::vector<int> ids(n + 1);
    for (int i = 0; i <= n; i++) ids[i] = (int)(((long)i * 7919 + 1) % nv);
    for (int i = 0; i < n; i++) {
        b.token[i] = ids[i]; b.pos[i] = i; b.n_seq_id[i] = 1; b.seq_id[i][0] = 0; b.logits[i] = 1;
    }
    b.n_tokens = n;
    if (llama_decode(ctx, b)) { fprintf(stderr, "decode failed\n"); return 1; }
    double sum = 0;
    for (int i = 0; i < n; i++) {
        float *l = llama_get_logits_ith(ctx, i);
        double m = -1e30; for (int v = 0; v < nv; v++) if (l[v] > m) m = l[v];
        double s = 0; for (int v = 0; v < nv; v++) s += exp(l[v] - m);
        double t = (m + log(s)) - l[ids[i + 1]]; sum += t; if (getenv("PER")) printf("%.6f ", t);
    }
    printf("%.6f\n", sum / n);
    return 0;
}
