// BERT's input embeddings, before their layer norm:
//   out[b, t, :] = word[ids[b, t]] + position[t] + token_type[type_ids[b, t]].
// The ids are u32 bits in a tensor's buffer (`Tensor::from_u32`), read here as array<u32>.
// The host refuses out-of-range ids before anything runs; a stray one still reads nothing out
// of bounds here (its row counts as zeros). Frozen tables: no backward.

struct Params {
    tokens: u32,       // batch·seq
    seq: u32,
    width: u32,
    vocab: u32,        // rows of word
    type_vocab: u32,   // rows of token_type
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;            // (batch, seq)
@group(0) @binding(2) var<storage, read> type_ids: array<u32>;       // (batch, seq)
@group(0) @binding(3) var<storage, read> word: array<f32>;           // (vocab, width)
@group(0) @binding(4) var<storage, read> position: array<f32>;       // (max_positions ≥ seq, width)
@group(0) @binding(5) var<storage, read> token_type: array<f32>;     // (type_vocab, width)
@group(0) @binding(6) var<storage, read_write> out: array<f32>;      // (batch, seq, width)

const WG: u32 = 256u;

@compute @workgroup_size(WG, 1, 1)
fn embeddings_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = p.tokens * p.width;
    for (var o = gid.x; o < n; o += nwg.x * WG) {
        let token = o / p.width;
        let c = o % p.width;
        let t = token % p.seq;
        let id = ids[token];
        let type_id = type_ids[token];
        var e = position[t * p.width + c];
        if (id < p.vocab) { e += word[id * p.width + c]; }
        if (type_id < p.type_vocab) { e += token_type[type_id * p.width + c]; }
        out[o] = e;
    }
}
