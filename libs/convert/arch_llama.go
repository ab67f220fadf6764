package convert

// llamaArch is LlamaModel (Llama, Mistral): TextModel's keys plus vocab_size and
// rope.dimension_count; q/k rows permuted (plan.go); rope_freqs for llama3 rope.
var llamaArch = &archSpec{gguf: "llama", hparams: textHParams}

// mixtralArch is LlamaModel on MixtralForCausalLM: the router is ffn_gate_inp, and the experts'
// w1/w2/w3 are stacked per block into ffn_gate_exps/ffn_down_exps/ffn_up_exps, in that order,
// once the block's last expert tensor has been read.
var mixtralArch = &archSpec{
	gguf: "llama", hparams: textHParams,
	names:        map[string]string{"block_sparse_moe.gate": "ffn_gate_inp"},
	expertPrefix: "block_sparse_moe.experts.",
	experts:      []expertProj{{"w1", "ffn_gate_exps"}, {"w2", "ffn_down_exps"}, {"w3", "ffn_up_exps"}},
}
